"""`python tests/kill_at.py MOMENT DATADIR main.py ARGS...`: main.py on generated CIFAR files (as tests/fake_cifar.py
runs it), killed with SIGKILL at MOMENT, as a power cut or the OOM killer would stop it: "final-test" as the final
test pass begins, "<file name>" once that file's temporary copy is written, before it is renamed into place."""
from __future__ import annotations

import importlib
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import storage  # noqa: E402
from fake_cifar import accept_files_in  # noqa: E402

if __name__ == "__main__":
    moment, datadir, script = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    accept_files_in(datadir)
    main = importlib.import_module(Path(script).stem)
    if moment == "final-test":
        predict, calls = main.predict, []

        def predict_then_die(model, loader, accelerator):
            calls.append(loader)
            if loader is not calls[0]:  # the first pass on another loader than validation's: the test set
                os.kill(os.getpid(), signal.SIGKILL)
            return predict(model, loader, accelerator)
        main.predict = predict_then_die
    else:
        sync = storage._sync

        def sync_then_die(path, fd=None):
            if path.name == f".{moment}.tmp":
                os.kill(os.getpid(), signal.SIGKILL)
            return sync(path, fd)
        storage._sync = sync_then_die
    main.main(sys.argv[4:])
