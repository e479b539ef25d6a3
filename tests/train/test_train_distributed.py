"""skdsl/train/distributed.py: torchrun with Gloo on CPU, one node or two, against one process."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from skdsl.train import TrainConfig, train
from skdsl.train import distributed as dist_

ROOT = Path(__file__).resolve().parents[2]

SPEC = """\
use "std/resnext.sk"

network test_sk:
    input 3x16x16
    classes 4

    stage conv1: conv 3x3, 16
    stage conv2: sk_unit(16, 32, stride=2, G=4, r=2, L=8)
    stage head:
        avgpool global
        fc classes
"""

# What each torchrun process runs: the real process group (the runner's: every rank waits for
# the others before it goes), preparation and loop, then each rank saves the weights it holds,
# so the test can compare them (rank 0 alone writes checkpoints). Without the wait, a rank that
# tears the group down while the other still uses it aborts now and then ("terminate called
# without an active exception"): 2 runs in 12 on two loaded cores, none in 36 with it. It
# came back once in CI (2026-11-30, after both ranks had finished and waited): a finished run
# can be held by cyclic garbage (see distributed.teardown), so its DDP model, whose reducer
# holds the group, outlived the group. `distributed.teardown` now collects it first (tested below); the worker also trains
# in a function of its own, as skdsl's trainer does.
WORKER = """\
import sys
import torch
from skdsl.train import TrainConfig, distributed, runner


def train_and_save(config, context, stop, out):
    run = runner.prepare(config, context, stop)
    status = runner.train_epochs(run)
    torch.save(run.raw_model.state_dict(), f"{out}/rank{context.rank}.pt")
    return status


def main(spec, out):
    config = TrainConfig(spec=spec, out=out, data="synthetic:train=128,val=32", batch_size=16,
                         epochs=2, seed=1, sync_bn=True, device="cpu")
    with distributed.process_group("cpu") as context, runner.StopSignals() as stop:
        status = train_and_save(config, context, stop, out)
        print(f"rank {context.rank} of {context.world_size}: {status}")


main(*sys.argv[1:3])
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ddp")
    (directory / "spec.sk").write_text(SPEC)
    (directory / "worker.py").write_text(WORKER)
    return directory


def torchrun(*arguments):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *map(str, arguments)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=environment, cwd=ROOT)


def finish(process):
    output, _ = process.communicate(timeout=240)
    assert process.returncode == 0, output
    return output


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def one_process(files):
    """The reference: one process with the whole global batch of 16 and plain BatchNorm."""
    train(TrainConfig(spec=str(files / "spec.sk"), out=str(files / "single"),
                      data="synthetic:train=128,val=32", batch_size=16, epochs=2, seed=1,
                      sync_bn=True, device="cpu", threads=1))  # as each torchrun worker has
    return torch.load(files / "single" / "last.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def launches(files):
    """Both torchrun launches, started at once: one launcher with two processes (--standalone),
    and two launchers as two nodes (see test_two_launchers_as_two_nodes_over_loopback). Each
    leaves a core idle much of its time (a launcher imports torch before its workers start,
    the small steps wait on each other's all-reduce), which the other then uses; each test
    waits for its own launch and checks it."""
    (files / "two").mkdir()
    (files / "nodes").mkdir()
    endpoint = f"127.0.0.1:{free_port()}"
    started = {"two": [torchrun("--standalone", "--nproc_per_node", 2, files / "worker.py",
                                files / "spec.sk", files / "two")],
               "nodes": [torchrun("--nnodes", 2, "--nproc_per_node", 1, "--rdzv-backend", "c10d",
                                  "--rdzv-endpoint", endpoint, "--rdzv-id", "skdsl-test",
                                  "--max-restarts", 0, files / "worker.py", files / "spec.sk",
                                  files / "nodes")
                         for _ in range(2)]}
    yield started
    for launchers in started.values():  # a failed test may leave one running
        for launcher in launchers:
            if launcher.poll() is None:
                launcher.kill()
                launcher.communicate()


@pytest.fixture(scope="module")
def two_processes(files, launches):
    out = files / "two"
    output = finish(launches["two"][0])
    assert "rank 0 of 2: finished" in output and "rank 1 of 2: finished" in output
    return [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in range(2)]


def test_two_gloo_processes_hold_identical_weights(two_processes):
    rank0, rank1 = two_processes
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name


def test_two_processes_match_one_process_with_the_same_global_batch(two_processes, one_process):
    """Each process takes 8 of every global batch of 16 (the same 16 images as the single
    process's batch); DDP averages the gradients. BatchNorm is the catch: normalised with its own
    8 images' statistics, each process would compute other activations than one process
    normalising all 16, so the run uses SyncBatchNorm (--sync-bn), which makes them the global
    batch's. What remains is float rounding from summing in another order."""
    for name, reference in one_process.items():
        if reference.is_floating_point():
            assert torch.allclose(two_processes[0][name], reference, rtol=1e-3, atol=1e-5), name
        else:
            assert torch.equal(two_processes[0][name], reference), name  # num_batches_tracked


def test_two_launchers_as_two_nodes_over_loopback(files, two_processes, launches):
    """torchrun's own multi-node rendezvous: two launchers (--nnodes 2, one process each) meet
    at a c10d endpoint on 127.0.0.1, as two machines would at the first one's address."""
    out = files / "nodes"
    outputs = [finish(launcher) for launcher in launches["nodes"]]
    assert "rank 0 of 2: finished" in "".join(outputs)
    assert "rank 1 of 2: finished" in "".join(outputs)
    nodes = [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    for name in nodes[0]:
        assert torch.equal(nodes[0][name], nodes[1][name]), name
        assert torch.allclose(nodes[0][name].float(), two_processes[0][name].float(),
                              rtol=1e-5, atol=1e-6), name


def test_one_process_needs_no_process_group():
    context = dist_.setup("cpu")
    assert (context.rank, context.world_size, context.is_main, context.distributed) == \
        (0, 1, True, False)
    total = torch.tensor([3.0])
    assert dist_.all_reduce(total, context) is total and total.item() == 3.0
    assert dist_.gather_objects({"a": 1}, context) == [{"a": 1}]


def test_gloo_sync_batchnorm_in_one_process_is_batchnorm(tmp_path):
    """Forward, backward and running statistics equal BatchNorm2d's (one process: the sums over
    processes are this process's own)."""
    import copy

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        reference = torch.nn.BatchNorm2d(3)
        synced = copy.deepcopy(reference)
        assert dist_.use_sync_batchnorm(synced, torch.device("cpu")) == 1
        assert isinstance(synced, dist_.GlooSyncBatchNorm)
        images = torch.randn(4, 3, 5, 5) * 3 + 1
        inputs = [images.clone().requires_grad_() for _ in range(2)]
        outputs = [reference(inputs[0]), synced(inputs[1])]
        gradient = torch.randn_like(outputs[0])
        for output in outputs:
            output.backward(gradient)
        assert torch.allclose(outputs[0], outputs[1], atol=1e-5)
        assert torch.allclose(inputs[0].grad, inputs[1].grad, atol=1e-5)
        assert torch.allclose(reference.weight.grad, synced.weight.grad, atol=1e-4)
        assert torch.allclose(reference.running_var, synced.running_var, atol=1e-5)
        assert torch.allclose(reference.running_mean, synced.running_mean, atol=1e-6)
        assert synced.state_dict().keys() == reference.state_dict().keys()
    finally:
        dist.destroy_process_group()


def test_teardown_frees_a_finished_runs_reference_cycles_before_the_group_goes(monkeypatch):
    """A finished run held only by cyclic garbage (here a cycle of its own) must be collected
    while the process group still works, not after it is destroyed."""
    import gc
    import weakref

    class Cycle:
        pass

    run = Cycle()
    run.itself = run
    alive = weakref.ref(run)
    del run
    freed_when_destroyed = []
    monkeypatch.setattr(dist_.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist_.dist, "destroy_process_group",
                        lambda: freed_when_destroyed.append(alive() is None))
    enabled = gc.isenabled()
    gc.disable()  # no automatic collection in between: only teardown's own can free it
    try:
        dist_.teardown()
    finally:
        if enabled:
            gc.enable()
    assert freed_when_destroyed == [True]
