"""Run LDAM-DRW's cifar_train.py, from its own folder, as it is but for its learning-rate milestones and DRW's
first epoch: hard-coded at epochs 160 and 180 of 200 (and DRW's `idx = epoch // 160`), they move to
REF_MILESTONES='m1 m2' (and REF_DRW_EPOCH, default m1) for a shortened run. Arguments go to it.

    cd LDAM-DRW && PYTHONPATH=.../tools/reference REF_MILESTONES="8 9" python .../run_ldam.py --epochs 10 ...
"""
import os
import sys

sys.path.insert(0, os.getcwd())  # cifar_train.py imports its own models, utils and losses
m1, m2 = os.environ.get("REF_MILESTONES", "160 180").split()
source = open("cifar_train.py").read()
assert source.count("epoch > 180") == 1 and source.count("epoch > 160") == 1, "not the cifar_train.py expected"
assert source.count("idx = epoch // 160") == 1, "not the cifar_train.py expected"
drw = os.environ.get("REF_DRW_EPOCH", m1)
source = source.replace("epoch > 180", f"epoch > {m2}").replace("epoch > 160", f"epoch > {m1}")
source = source.replace("idx = epoch // 160", f"idx = min(epoch // {drw}, 1)")  # betas[idx] has two entries
sys.argv = ["cifar_train.py"] + sys.argv[1:]
exec(compile(source, "cifar_train.py", "exec"), {"__name__": "__main__", "__file__": "cifar_train.py"})
