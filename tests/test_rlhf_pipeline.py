"""The RLHF pipeline command on the experiments' tiny variants: runs, reports, resumes."""

import os

from transformer import rlhf_pipeline


def test_tiny_pipeline_runs_reports_and_resumes(tmp_path):
  workdir, data_dir = str(tmp_path / "rlhf"), str(tmp_path / "tfds")
  report = rlhf_pipeline.run_pipeline(workdir, tiny=True, data_dir=data_dir, num_prompts=4,
                                      print_fn=lambda line: None)
  text = open(report).read()
  for stage in ("pretrain", "finetune", "finetune_scratch", "reward", "dpo", "policy",
                "best_of_n", "compare_policies"):
    assert f"| {stage} |" in text
  for system in ("reference", "best_of_8", "rloo", "dpo"):  # the comparison's table
    assert f"| {system} |" in text
  assert os.path.exists(os.path.join(workdir, "bon", "best_of_n.png"))
  assert os.path.exists(os.path.join(workdir, "compare", "compare_policies.png"))
  lines = []
  rlhf_pipeline.run_pipeline(workdir, tiny=True, data_dir=data_dir, num_prompts=4,
                             print_fn=lines.append)
  assert sum("skipped" in line for line in lines) == 6
  assert not any("experiments/" in line for line in lines)  # nothing trained again
