"""benchmarks/bench_ops.py: its command line, case scaling and timing logic,
CUDA path included, checked on the CPU with tiny shapes and pair counts."""

import time
from pathlib import Path

import pytest
import torch

import torchconv
from script_module import load_script

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_ops.py"


bench = load_script(_PATH)


def _tiny_case(name="tiny conv {n}x2x6x6 -> 3 k3 p1", batch=2):
    return bench.Case(name, batch, bench._conv(2, 6, 3, 3, padding=1), torchconv.conv2d, torch.nn.functional.conv2d)


class FakeClock:
    """A clock that only the fake ops below advance, for exact timings."""

    now = 0.0


class FakeEvent:
    """Stands in for torch.cuda.Event(enable_timing=True), reading FakeClock."""

    clock = staticmethod(lambda: FakeClock.now)

    def __init__(self):
        self.t = None
        self.synchronized = False

    def record(self):
        self.t = self.clock()

    def synchronize(self):
        self.synchronized = True

    def elapsed_time(self, end):
        return (end.t - self.t) * 1e3  # ms, as CUDA events report


class WallClockEvent(FakeEvent):
    """A fake event for real (CPU) work: reads the wall clock."""

    clock = staticmethod(time.perf_counter)


def test_cli_parses_cuda_and_dtype_list():
    args = bench.build_parser().parse_args(["--device", "cuda", "--dtype", "float32,bfloat16", "--pairs", "30"])
    assert args.device == "cuda"
    assert args.dtype == ["float32", "bfloat16"]
    assert args.pairs == 30
    assert bench.build_parser().parse_args(["--dtype", "all"]).dtype == ["float32", "bfloat16"]
    defaults = bench.build_parser().parse_args([])
    assert defaults.device == "cpu" and defaults.dtype == ["float32"]


def test_cli_rejects_unknown_dtype(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.build_parser().parse_args(["--dtype", "float32,int8"])
    assert exit_info.value.code == 2
    assert "unknown dtype 'int8'" in capsys.readouterr().err


def test_cases_scale_batch_by_8_on_cuda():
    assert bench.BATCH_SCALE == {"cpu": 1, "cuda": 8}
    for case in bench.CASES:
        (base, *base_rest), base_kwargs = case.make(1, "meta")
        (scaled, *rest), kwargs = case.make(bench.BATCH_SCALE["cuda"], "meta", torch.bfloat16)
        assert base.shape[0] == case.batch
        assert scaled.shape == (8 * base.shape[0], *base.shape[1:]), case.name()
        assert scaled.device.type == "meta" and scaled.dtype == torch.bfloat16 and scaled.requires_grad
        assert kwargs == base_kwargs
        for a, b in zip(rest, base_rest):
            # weights and biases keep their shapes; pooling's ints stay as they are
            assert (a.shape, a.dtype) == (b.shape, torch.bfloat16) if isinstance(a, torch.Tensor) else a == b
        assert case.name(8).startswith(case.name(1).split(f"{case.batch}x")[0] + f"{8 * case.batch}x")
    # The CPU shapes are the historical ones.
    assert bench.CASES[bench.MEMORY_CASE].name() == "resnet conv 16x64x56x56 -> 64 k3 p1"
    # --cases matches a name at either batch size.
    names = [c.name(8) for c in bench.select_cases(bench.CASES, "resnet conv 16x64", 8)]
    assert names == ["resnet conv 128x64x56x56 -> 64 k3 p1"]
    assert bench.select_cases(bench.CASES, "resnet conv 128x64", 8) == bench.select_cases(bench.CASES, "resnet conv 16x64", 8)


def test_device_cuda_without_gpu_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--device", "cuda", "--dtype", "float32,bfloat16", "--pairs", "1"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "--device cuda: no CUDA GPU is available" in captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_bad_device_and_backend_are_clear_errors(capsys):
    for argv, message in [
        (["--device", "mps"], "only cpu and cuda"),
        (["--backend", "nope"], "unknown backend 'nope'"),
        (["--cases", "no such case"], "no case name contains it"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            bench.main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_tiny_cpu_run_prints_a_ratio_table(monkeypatch, capsys):
    monkeypatch.setattr(bench, "CASES", [_tiny_case()])
    argv = ["--pairs", "1", "--warmup", "0", "--no-memory", "--no-cold-start", "--dtype", "float32,float64"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "run as: python benchmarks/bench_ops.py " + " ".join(argv) in out
    assert "vs torch" in out and "ratio = torchconv time / torch time" in out
    assert "--device cuda --dtype float32,bfloat16" in out  # the table says how to run it on a GPU
    for dtype in ("[float32]", "[float64]"):
        assert dtype in out
    rows = [line for line in out.splitlines() if line.startswith("tiny conv 2x2x6x6")]
    assert len(rows) == 2
    for row in rows:
        fwd, both, ms = map(float, row.split()[-3:])
        assert fwd > 0 and both > 0 and ms > 0
    assert out.count("geomean") == 2 and out.count("worst fwd+bwd case: tiny conv 2x2x6x6") == 2


def test_cpu_timer_runs_one_call_per_region():
    timer = bench.make_timer("cpu")
    assert isinstance(timer, bench.PerfCounterTimer)
    calls = []
    assert bench.choose_reps(lambda: calls.append(1), lambda: None, timer) == 1
    assert calls == []  # no calibration calls on the CPU
    ratio, t_ours, t_theirs, reps = bench.median_ratio(lambda: calls.append(1), lambda: None, pairs=3, warmup=1, timer=timer)
    assert reps == 1 and len(calls) == 4 and ratio > 0 and t_ours > 0 and t_theirs > 0


def test_cuda_event_timer_logic_with_fake_events():
    syncs = []
    timer = bench.CudaEventTimer(event=FakeEvent, synchronize=lambda: syncs.append(1))
    assert timer.min_region == pytest.approx(1e-3)
    calls = {"ours": 0, "theirs": 0}

    ours_s, theirs_s = 2.0**-15, 2.0**-16  # ~31 and ~15 us a call; exact in binary

    def ours():
        calls["ours"] += 1
        FakeClock.now += ours_s

    def theirs():
        calls["theirs"] += 1
        FakeClock.now += theirs_s

    # A region repeats the call; the time is per call, from the events, in seconds.
    assert timer(ours, reps=4) == pytest.approx(ours_s)
    assert calls["ours"] == 4 and syncs == [1] and timer.end.synchronized

    # Short calls are repeated, the same number of times on both sides, so that
    # the faster side's region lasts at least 1 ms: ceil(1 ms / 15.26 us) = 66.
    assert bench.choose_reps(ours, theirs, timer) == 66
    calls.update(ours=0, theirs=0)
    ratio, t_ours, t_theirs, reps = bench.median_ratio(ours, theirs, pairs=2, warmup=1, timer=timer)
    assert reps == 66
    assert ratio == pytest.approx(2.0) and t_ours == pytest.approx(ours_s) and t_theirs == pytest.approx(theirs_s)
    # warm-up + 3 calibration rounds + 2 pairs of `reps` calls, the same on both sides
    assert calls["ours"] == calls["theirs"] == 1 + 3 + 2 * reps

    # Calls longer than the minimum region run once per region.
    slow = lambda: setattr(FakeClock, "now", FakeClock.now + 5e-3)  # noqa: E731
    assert bench.choose_reps(slow, slow, timer) == 1


def test_cuda_table_path_with_fake_events_on_cpu():
    """The CUDA table (batch x8, reps column, float32 target line) with the
    event timer faked and the tensors on the CPU."""
    timer = bench.CudaEventTimer(event=WallClockEvent, synchronize=lambda: None)
    timer.min_region = 2e-4  # keep it quick
    lines = []
    result = bench.run_table([_tiny_case()], "cpu", "float32", 8, pairs=1, warmup=0, timer=timer,
                             out=lines.append, cuda=True)
    assert result["names"] == ["tiny conv 16x2x6x6 -> 3 k3 p1"]
    assert len(result["fwd"]) == len(result["both"]) == 1
    text = "\n".join(lines)
    assert "reps fwd/bwd" in text and "tiny conv 16x2x6x6" in text
    assert "target (CUDA float32 geomean fwd+bwd <= 2)" in text

    lines.clear()
    bench.run_table([_tiny_case()], "cpu", "bfloat16", 8, pairs=1, warmup=0, timer=timer, out=lines.append, cuda=True)
    text = "\n".join(lines)
    assert "[bfloat16]" in text and "target" not in text  # the target is float32's
    lines.clear()
    bench.run_table([_tiny_case()], "cpu", "float32", 1, pairs=1, warmup=0, timer=bench.PerfCounterTimer(),
                    out=lines.append)
    assert "reps" not in "\n".join(lines)  # the CPU table has no reps column


def test_cuda_header_and_tf32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU 80GB")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91234)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=True):  # torch's default
        with bench.precision(cuda=True):
            assert torch.backends.cuda.matmul.allow_tf32 is False and torch.backends.cudnn.allow_tf32 is False
            text = "\n".join(bench.header(torch.device("cuda"), "cuda", ["float32", "bfloat16"], 30, 10))
        assert torch.backends.cudnn.allow_tf32 is True  # restored
    for part in ("Fake GPU 80GB", "cuDNN 91234", f"CUDA {torch.version.cuda}", torch.__version__, "backend 'cuda'",
                 "allow_tf32=False", "cudnn.benchmark=", "batch x8", "CUDA events", "float32, bfloat16"):
        assert part in text, part


def test_cold_start_child_prints_first_and_warm_seconds(capsys):
    bench._cold_start_child("torchconv", torchconv.backends.current("cpu"), "cpu")
    first, warm = map(float, capsys.readouterr().out.split())
    assert first > 0 and warm > 0
