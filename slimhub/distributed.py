"""Multi-process data parallelism through paddle.distributed (one process per device)."""
from __future__ import annotations

import math

import numpy as np
import paddle
import paddle.distributed as dist


def world_size():
    return dist.get_world_size()


def rank():
    return dist.get_rank()


def wrap(network):
    """The callable that trains ``network``: itself, or a DataParallel over it."""
    if world_size() == 1:
        return network
    if not dist.is_initialized():
        dist.init_parallel_env()
    return paddle.DataParallel(network)


class EpochBatchSampler(paddle.io.DistributedBatchSampler):
    """This rank's batches of one epoch (shuffled by epoch number), minus the first ``skip``.

    The order depends only on the epoch, so a run resumed mid-epoch sees the same
    batches as an uninterrupted one.
    """

    def __init__(self, dataset, batch_size, shuffle=False, epoch=0, skip=0, drop_last=False):
        super().__init__(dataset, batch_size, num_replicas=world_size(), rank=rank(),
                         shuffle=shuffle, drop_last=drop_last)
        self.set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        for i, batch in enumerate(super().__iter__()):
            if i >= self.skip:
                yield batch

    def __len__(self):
        return super().__len__() - self.skip


def shard(dataset):
    """This rank's contiguous slice of ``dataset``, padded so all ranks hold the same count."""
    n, w = len(dataset), world_size()
    if w == 1:
        return dataset
    per_rank = math.ceil(n / w)
    start = rank() * per_rank
    indices = [min(i, n - 1) for i in range(start, start + per_rank)]
    return paddle.io.Subset(dataset, indices)


def gather(array, n):
    """Concatenate every rank's ``array`` in rank order and keep the first ``n`` rows."""
    if world_size() == 1:
        return array
    parts = []
    dist.all_gather(parts, paddle.to_tensor(array))
    return np.concatenate([p.numpy() for p in parts])[:n]


def mean_over_ranks(logs):
    """Average scalar logs over ranks."""
    if world_size() == 1:
        return logs
    values = paddle.to_tensor([float(v) for v in logs.values()], dtype="float64")
    dist.all_reduce(values)
    return dict(zip(logs, (values / world_size()).numpy().tolist()))


def broadcast_buffers(network):
    """Give every rank rank 0's non-trained state (BatchNorm running statistics are per rank)."""
    if world_size() == 1:
        return
    for tensor in network.state_dict().values():
        if tensor.stop_gradient:
            dist.broadcast(tensor, src=0)
