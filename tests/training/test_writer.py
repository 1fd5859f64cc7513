import os

from transformer.training import writer


def test_progress_line_shows_step_loss_grad_norm_lr_throughput_mfu_eta():
  line = writer.progress_line(120, 600, 3.21012, 1.2e-3, 5412.4, 0.3123, 130, grad_norm=0.41234)
  assert line == ("step 120/600 | loss 3.2101 | grad norm 0.412 | lr 1.20e-03 | 5,412 tok/s | "
                  "MFU 31.2% | ETA 2m10s")
  assert "grad norm" not in writer.progress_line(1, 2, 3.0, 1e-3, 10.0, 0.1, 5)
  shown = writer.progress_line(1, 2, 3.0, 1e-3, 10.0, 0.1, 5, extra={"kl": 2.59211, "score": -3.9})
  assert shown.startswith("step 1/2 | loss 3.0000 | kl 2.5921 | score -3.9000 | lr ")


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


def test_a_resume_keeps_one_record_per_step_and_split(tmp_path):
  metric_writer = writer.MetricWriter(str(tmp_path))
  for step in range(1, 6):  # a run killed at step 5 whose last checkpoint is step 3
    metric_writer.write(step, "train", {"loss": 1.0})
  metric_writer.write(3, "eval", {"loss": 2.0})
  metric_writer.close()
  metric_writer = writer.MetricWriter(str(tmp_path), resume_step=3)
  for step in (4, 5, 6):  # the resumed run trains steps 4-6 again
    metric_writer.write(step, "train", {"loss": 0.5})
  metric_writer.close()
  records = [(r["step"], r["split"], r["loss"]) for r in writer.read_jsonl(str(tmp_path))]
  assert records == [(1, "train", 1.0), (2, "train", 1.0), (3, "train", 1.0), (3, "eval", 2.0),
                     (4, "train", 0.5), (5, "train", 0.5), (6, "train", 0.5)]


def test_a_torn_last_line_is_ignored_with_a_warning(tmp_path, caplog):
  path = tmp_path / writer.JSONL_FILE
  path.write_text('{"step": 1, "split": "train", "loss": 1.0}\n{"step": 2, "split": "tr')
  assert writer.read_jsonl(str(tmp_path)) == [{"step": 1, "split": "train", "loss": 1.0}]
  assert "metrics.jsonl:2: ignoring a line that is not a whole metrics record" in caplog.text
  metric_writer = writer.MetricWriter(str(tmp_path), resume_step=1)  # the rerun drops it
  metric_writer.write(2, "train", {"loss": 0.5})
  metric_writer.close()
  assert [r["step"] for r in writer.read_jsonl(str(tmp_path))] == [1, 2]
  assert os.path.getsize(writer.plot_curves(str(tmp_path))) > 0
