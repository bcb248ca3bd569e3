"""Recipes: one YAML file describes a whole compression job (model, data, trainer,
strategies with their epoch windows, export). See docs/recipes.md."""
from slimhub.recipe.errors import RecipeError
from slimhub.recipe.recipe import Recipe, check_recipe, find_recipe, list_recipes, load_recipe, run_recipe
from slimhub.recipe.schema import schema_keys

__all__ = ["Recipe", "RecipeError", "check_recipe", "find_recipe", "list_recipes", "load_recipe", "run_recipe", "schema_keys"]
