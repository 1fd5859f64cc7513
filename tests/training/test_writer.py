import os

from transformer.training import writer


def test_progress_line_shows_step_loss_lr_throughput_mfu_eta():
  line = writer.progress_line(120, 600, 3.21012, 1.2e-3, 5412.4, 0.3123, 130)
  assert line == "step 120/600 | loss 3.2101 | lr 1.20e-03 | 5,412 tok/s | MFU 31.2% | ETA 2m10s"


def test_writer_appends_jsonl_and_events_and_plots(tmp_path):
  metric_writer = writer.MetricWriter(str(tmp_path))
  for step in (1, 2):
    metric_writer.write(step, "train", {"loss": 3.0 / step, "learning_rate": 1e-3})
  metric_writer.write(2, "eval", {"loss": 2.0, "accuracy": 0.1})
  metric_writer.close()
  records = writer.read_jsonl(str(tmp_path))
  assert [r["split"] for r in records] == ["train", "train", "eval"] and records[1]["loss"] == 1.5
  assert os.listdir(tmp_path / "tensorboard")
  assert os.path.getsize(writer.plot_curves(str(tmp_path))) > 0
