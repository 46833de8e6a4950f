"""The thread governor (issue 20, item 14): its decision from injected readings of other processes' CPU use, the
readers (/proc/stat, load average), pinning, and the one-line hooks in the decode, engine and training loops."""

import pytest
import torch

from lmforge.common import thread_governor as tg
from lmforge.common import threads
from lmforge.common.errors import LmforgeError
from lmforge.common.thread_governor import LoadAverageReader, ProcStatReader, ThreadGovernor, decide


# ---------------------------------------------------------------------------------------------------- decide()
@pytest.mark.parametrize("current", [1, 2])
def test_an_idle_machine_gets_every_core(current):
    assert decide(current, maximum=2, cpus=2, others=0.0) == 2
    assert decide(current, maximum=16, cpus=16, others=0.1) == 16


@pytest.mark.parametrize("others", [0.67, 1.0, 1.33, 2.0, 5.0])
def test_one_busy_process_on_two_cores_leaves_one_thread(others):
    """A busy loop against our two spinning threads gets 2/3 of a core; two busy loops against one thread 4/3."""
    assert decide(2, maximum=2, cpus=2, others=others) == 1
    assert decide(1, maximum=2, cpus=2, others=others) == 1


def test_hysteresis_keeps_the_count_between_the_thresholds():
    # 2 -> 1 only above 0.5 core of others, 1 -> 2 only below 0.2: a reading in between changes nothing
    for others in (0.25, 0.4, 0.5):
        assert decide(2, 2, 2, others) == 2 and decide(1, 2, 2, others) == 1
    assert decide(2, 2, 2, 0.55) == 1 and decide(1, 2, 2, 0.15) == 2
    # many cores: follows the free cores, each way with its own slack
    assert decide(16, 16, 16, 3.4) == 13 and decide(13, 16, 16, 3.0) == 13 and decide(13, 16, 16, 2.1) == 14


def test_never_above_the_maximum_never_below_one():
    assert decide(4, maximum=4, cpus=16, others=0.0) == 4
    assert decide(4, maximum=4, cpus=16, others=14.0) == 2
    assert decide(1, maximum=4, cpus=2, others=-1.0) == 2
    assert decide(3, maximum=3, cpus=4, others=40.0) == 1


# ---------------------------------------------------------------------------------------------------- the governor
class Scripted:
    """A reader that returns the given readings in turn (None: no reading yet)."""

    def __init__(self, *readings):
        self.readings, self.asked = list(readings), []

    def others(self, current_threads):
        self.asked.append(current_threads)
        return self.readings.pop(0) if self.readings else 0.0


def make(reader, maximum=2, cpus=2, interval=0.25, initial_others=None):
    state = {"threads": maximum, "now": 0.0, "sets": []}

    def set_threads(n):
        state["threads"] = n
        state["sets"].append(n)

    gov = ThreadGovernor(maximum, cpus, reader, get_threads=lambda: state["threads"], set_threads=set_threads,
                         clock=lambda: state["now"], interval=interval, initial_others=initial_others)
    return gov, state


def test_governor_decides_once_per_interval_and_sets_only_changes():
    gov, state = make(Scripted(None, 1.0, 1.0, 0.0))  # the first call is the baseline
    assert gov.tick() == 2 and state["sets"] == []  # before the interval: no reading
    state["now"] = 0.3
    assert gov.tick() == 1 and state["sets"] == [1]
    state["now"] = 0.4
    assert gov.tick() == 1  # within the interval: no new reading
    state["now"] = 0.6
    assert gov.tick() == 1 and state["sets"] == [1]  # same count: torch is not called again
    state["now"] = 0.9
    assert gov.tick() == 2 and state["sets"] == [1, 2] and gov.decisions == 2


def test_a_slow_step_still_decides():
    """Two spinning threads on a loaded CPU: one step can take seconds, and its reading is the one that matters."""
    gov, state = make(Scripted(None, 1.8))
    state["now"] = 60.0
    assert gov.tick() == 1 and state["sets"] == [1]


def test_the_first_guess_comes_before_the_first_reading():
    gov, state = make(Scripted(None), initial_others=16.0)  # a load average of 16 on 2 cores
    assert gov.current == 1 and state["sets"] == [1]
    gov, state = make(Scripted(None), initial_others=0.1)
    assert gov.current == 2 and state["sets"] == []
    gov, state = make(Scripted(None), initial_others=16.0)
    gov.pin(2)
    assert gov.tick() == 2 and state["sets"] == [1, 2]


def test_a_count_changed_behind_the_governors_back_is_set_again():
    gov, state = make(Scripted(None, 1.0, 1.0))
    state["now"] = 0.3
    gov.tick()
    state["threads"] = 2  # other code called torch.set_num_threads(2)
    state["now"] = 0.6
    assert gov.tick() == 1 and state["sets"] == [1, 1]


def test_pinned_threads_are_respected():
    gov, state = make(Scripted(None, 2.0, 2.0))
    gov.pin(2)
    for now in (0.3, 0.6, 0.9):
        state["now"] = now
        assert gov.tick() == 2
    assert state["sets"] == [2] and not gov.active


def test_without_a_reading_or_with_one_core_nothing_happens():
    gov, state = make(None)
    state["now"] = 1.0
    assert gov.tick() == 2 and state["sets"] == [] and not gov.active
    gov, state = make(Scripted(None, 3.0), maximum=1)
    state["now"] = 1.0
    assert gov.tick() == 1 and state["sets"] == []


def test_load_average_fallback_discounts_our_own_threads(monkeypatch):
    monkeypatch.setattr(tg.os, "getloadavg", lambda: (2.1, 1.0, 0.5))
    assert LoadAverageReader().others(2) == pytest.approx(0.1)  # the load is us: keep both threads
    assert decide(2, 2, 2, LoadAverageReader().others(2)) == 2
    monkeypatch.setattr(tg.os, "getloadavg", lambda: (3.0, 1.0, 0.5))
    assert decide(2, 2, 2, LoadAverageReader().others(2)) == 1


def test_proc_stat_reader_counts_other_processes_on_our_cpus(tmp_path):
    stat = tmp_path / "stat"
    hz = tg.TICKS_PER_SECOND

    def write(cpu0, cpu1, cpu2):  # busy ticks per CPU: user, then steal
        lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]
        for i, (user, steal) in enumerate((cpu0, cpu1, cpu2)):
            lines.append(f"cpu{i} {round(user)} 0 0 500 7 0 0 {round(steal)} 0 0")
        stat.write_text("\n".join(lines + ["intr 1 2 3", "procs_running 3"]) + "\n")

    clock, own = iter([10.0, 11.0]), iter([5.0, 5.5])
    reader = ProcStatReader(frozenset({0, 1}), str(stat), clock=lambda: next(clock), own_time=lambda: next(own))
    write((100, 0), (100, 0), (0, 0))
    assert reader.others(2) is None
    # one second later: cpu0 +0.9 s busy + 0.1 s stolen, cpu1 +0.5 s, cpu2 (not ours) +1 s; we used 0.5 s
    write((100 + 0.9 * hz, 0.1 * hz), (100 + 0.5 * hz, 0), (hz, 0))
    assert reader.others(2) == pytest.approx(1.0)


def test_the_real_reader_reads_this_machine():
    reader = tg.default_reader()
    assert reader is not None
    reader.others(1)
    sum(range(10**6))
    assert reader.others(1) >= 0.0


# ---------------------------------------------------------------------------------------------------- LMFORGE_THREADS
def test_lmforge_threads_variable():
    assert threads.threads_from_env({}) is None and threads.threads_from_env({"LMFORGE_THREADS": "auto"}) is None
    assert threads.threads_from_env({"LMFORGE_THREADS": " 3 "}) == 3
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(LmforgeError, match=f"LMFORGE_THREADS must be 'auto' or an integer >= 1, got '{bad}'"):
            threads.threads_from_env({"LMFORGE_THREADS": bad})


# ---------------------------------------------------------------------------------------------------- the hooks
@pytest.fixture
def busy_machine(monkeypatch):
    """This process's governor replaced by one that always reads a busy machine and decides at every tick."""
    readings = Scripted(None, *[5.0] * 1000)
    counter = iter(range(10**6))
    gov = ThreadGovernor(2, 2, readings, get_threads=torch.get_num_threads, set_threads=torch.set_num_threads,
                         clock=lambda: next(counter), interval=0.5)
    monkeypatch.setattr(threads, "_governor", gov)
    before = torch.get_num_threads()
    yield gov, readings
    torch.set_num_threads(before)


def test_the_decode_loops_tick(busy_machine, context_llama):
    from lmforge.generation.generate import decode, generate

    gov, readings = busy_machine
    generate(context_llama, [[1, 2, 3]], max_new_tokens=4, temperature=0)
    assert len(readings.asked) == 1 + 4 and torch.get_num_threads() == 1 and gov.decisions == 1
    decode(context_llama, [1, 2, 3], max_new_tokens=3)
    assert len(readings.asked) == 1 + 4 + 3


def test_the_engine_step_ticks(busy_machine, context_llama):
    from lmforge.engine.llm import LLM, EngineConfig
    from lmforge.generation.sampling_params import SamplingParams

    gov, readings = busy_machine
    llm = LLM(context_llama, config=EngineConfig(num_blocks=16, block_size=8))
    llm.add_request([1, 2, 3], SamplingParams(temperature=0, max_new_tokens=3))
    steps = 0
    while llm.has_unfinished():
        llm.step()
        steps += 1
    assert len(readings.asked) == 1 + steps and torch.get_num_threads() == 1


@pytest.mark.parametrize("threads_flag", [None, 2])
def test_the_training_step_ticks_and_its_threads_flag_pins(busy_machine, tmp_path, threads_flag):
    import numpy as np

    from lmforge.model import Transformer, get_preset
    from lmforge.train.config import TrainConfig
    from lmforge.train.trainer import Trainer

    gov, readings = busy_machine
    rows = np.random.default_rng(0).integers(0, 64, size=(2, 17))

    class Loader(list):
        seq_len = 16

        def state_dict(self):
            return {}

    loader = Loader([(rows[:, :-1], rows[:, 1:])])
    cfg = TrainConfig.from_dict(dict(
        out=str(tmp_path / "run"), batch_size=2, max_steps=3, warmup_steps=1, eval_every=1000, sample_every=1000,
        checkpoint_every=1000, progress=False, peak_tflops=1.0, device="cpu", export_hf=False, precision="fp32",
        threads=threads_flag))
    model = Transformer(get_preset("tiny-llama", vocab_size=64, dim=32, ffn_dim=64, max_seq_len=32))
    Trainer(cfg, model, loader, None, log=lambda m: None).fit()
    if threads_flag is None:  # governed: one reading per step, and the busy machine leaves one thread
        assert len(readings.asked) == 1 + 3 and torch.get_num_threads() == 1
    else:  # pinned by --threads: no reading, the count stays
        assert gov.pinned == 2 and len(readings.asked) == 1 and torch.get_num_threads() == 2


def test_first_guess_counts_tasks_runnable_now_not_a_minute_ago(tmp_path, monkeypatch):
    """The 1-minute load average still counts processes that ended (a previous run left it at 1.6 on an idle 2-core
    machine: the governor started on one thread); /proc/loadavg's running count is the instant."""
    monkeypatch.setattr(tg.os, "getloadavg", lambda: (1.6, 1.0, 0.5))
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("1.60 1.00 0.50 1/70 4242\n")  # only the reading thread runs
    assert tg.first_guess(str(loadavg)) == 0.0
    assert decide(2, 2, 2, tg.first_guess(str(loadavg))) == 2
    loadavg.write_text("0.10 0.10 0.10 3/70 4242\n")  # two busy processes besides us, load average not yet up
    assert decide(2, 2, 2, tg.first_guess(str(loadavg))) == 1
    assert tg.first_guess(str(tmp_path / "missing")) == 1.6  # no /proc: the load average
