"""Issue 24, session 4: build one depth task's start model exactly as `appo study` does (prepare_start_model,
both SFT_STAGES), without starting any run, so its profile can be measured first."""
import sys
import time
from pathlib import Path

from appo.study.runner import StudySettings, prepare_start_model, start_model_dir

task = sys.argv[1]
out = Path(sys.argv[2])
t0 = time.time()
s = StudySettings(tasks=(task,))
m = prepare_start_model(task, start_model_dir(task, out), s)
print(f"start model {m} in {(time.time() - t0) / 60:.1f} min", flush=True)
