"""Fixtures shared by several test files."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread (and do not fight the other tests for cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def interrupt_at(monkeypatch):
    """`interrupt_at(k)`: the next `vjepa.train.train` dies (KeyboardInterrupt) as step k starts, as a
    crash after the last checkpoint would; `monkeypatch.undo()` (or the test's end) restores it."""
    import vjepa.train as train_module

    real = train_module.train_step

    def patch(at_step: int) -> None:
        def step(model, optimizer, video, masks, step, *rest):
            if step == at_step:
                raise KeyboardInterrupt
            return real(model, optimizer, video, masks, step, *rest)

        monkeypatch.setattr(train_module, "train_step", step)

    return patch
