"""The Transformer on one tiny sentence pair, matrix by matrix, from the model's own numbers.

`walkthrough` builds a word-level vocabulary from an input and a target sentence,
initialises two one-layer `EncoderDecoder` models from the same `ModelConfig` that
differ only in `num_heads` (the encoder walk uses one, the decoder walk another,
as in the hand-worked tutorial this walk follows: F. Khan, "Solving Transformer by
Hand: A Step-by-Step Math Example"), runs the first model's encoder and the second model's
decoder on its output, and returns an ordered list of `Step`s: every matrix is
a value the model sowed into, or returned from, its 'intermediates' collection
(or, for the mask, positions and Q K^T, the model's own function on the same
arguments). `format_walk` prints them; `plot_heatmaps` draws the attention heads
and the positional encodings.

Where that tutorial and the paper differ, the walk follows the paper and says so
in the step's note.
"""

import dataclasses
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from transformer.models.attention import MultiHeadAttention, make_attention_mask
from transformer.models.config import ModelConfig
from transformer.models.embeddings import TokenEmbedding, sinusoidal_positions
from transformer.models.layers import FeedForward
from transformer.models.sequences import positions_or_default, segmentation_or_default
from transformer.models.transformer import EncoderDecoder
from transformer.special_ids import BOS_ID, EOS_ID, PAD_ID, UNK_ID

SPECIAL_TOKENS = {PAD_ID: "<pad>", EOS_ID: "<end>", BOS_ID: "<start>", UNK_ID: "<unk>"}
_MASKED = float(np.finfo(np.float32).min)  # the model's fill value for masked scores


@dataclasses.dataclass(frozen=True)
class Step:
  """One printed matrix.

  Attributes:
    key: stable dotted id, e.g. 'encoder.self_attention.head1.weights' (tests index by it).
    section: 'vocabulary', 'encoder', 'decoder' or 'output'.
    title: what the matrix is, e.g. 'Q = X W^Q + b^Q'.
    value: the matrix, [rows, cols] (or [cols] for ids); batch dimension dropped.
    rows: a label per row (tokens), or () for a 1-D value.
    cols: a label per column, or () for feature columns.
    note: one line on what the model does here (and where the paper and the notes differ).
  """

  key: str
  section: str
  title: str
  value: np.ndarray
  rows: tuple[str, ...] = ()
  cols: tuple[str, ...] = ()
  note: str = ""


@dataclasses.dataclass(frozen=True)
class Walk:
  """The walkthrough: its inputs, the two models' configs and params, and the steps in order.

  Attributes:
    vocabulary: words by id; the special tokens at the project's reserved ids.
    inputs: int [input_len] encoder input ids.
    decoder_inputs: int [target_len] <start> + target ids (the targets shifted right).
    targets: int [target_len] target ids + <end>.
    encoder_config, decoder_config: the encoder walk's and decoder walk's ModelConfig.
    encoder_params, decoder_params: their 'params' pytrees (shared 'token_embedding').
    steps: every printed matrix, in order.
  """

  vocabulary: tuple[str, ...]
  inputs: np.ndarray
  decoder_inputs: np.ndarray
  targets: np.ndarray
  encoder_config: ModelConfig
  decoder_config: ModelConfig
  encoder_params: dict
  decoder_params: dict
  steps: tuple[Step, ...]


def build_vocabulary(*sentences: str) -> tuple[str, ...]:
  """Words by id: the special tokens at their reserved ids, then each new word as it appears."""
  vocabulary = [SPECIAL_TOKENS[i] for i in range(len(SPECIAL_TOKENS))]
  for word in " ".join(sentences).split():
    if word not in vocabulary:
      vocabulary.append(word)
  return tuple(vocabulary)


def walk_configs(vocab_size: int, d_model: int, encoder_heads: int, decoder_heads: int,
                 d_ff: int) -> tuple[ModelConfig, ModelConfig]:
  """The encoder and decoder walks' configs: one layer each, no dropout, differing in num_heads."""
  config = ModelConfig(vocab_size=vocab_size, d_model=d_model, num_heads=encoder_heads, d_ff=d_ff,
                       num_encoder_layers=1, num_decoder_layers=1).eval()
  return config, dataclasses.replace(config, num_heads=decoder_heads)


def _captured(module: nn.Module, method_name: str) -> bool:
  """Module outputs to capture besides the sown values: embeddings, W^O projections, the FFN."""
  return method_name == "__call__" and (
      isinstance(module, (TokenEmbedding, FeedForward))
      or (isinstance(module.parent, MultiHeadAttention) and module.name == "out")
      or (isinstance(module.parent, FeedForward) and module.name == "wi"))


# On CPU the walk's cost is compiling, not running: these XLA settings cut it about threefold.
_CPU_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}


def _run_models(encoder_config: ModelConfig, decoder_config: ModelConfig, rng: jax.Array,
                inputs: jnp.ndarray, decoder_inputs: jnp.ndarray) -> dict:
  """Initialises both models, encodes with the first and decodes its output with the second.

  Also evaluates, on the same arguments, the model functions whose results are not sown:
  the sinusoidal tables, the attention masks, Q K^T (before its scaling) and the softmax.

  Args:
    encoder_config, decoder_config: from `walk_configs`.
    rng: PRNG key for the parameters.
    inputs: int [1, input_len].
    decoder_inputs: int [1, target_len].

  Returns:
    {'encoder_params', 'decoder_params' (holding the encoder's token table),
     'encoder', 'decoder' (intermediates trees), 'logits', 'probabilities' [1, target_len, vocab],
     'positional_encodings' {stack: [1, len, d_model]}, 'masks' and 'qk' {block: [1, h|1, q, k]}}.
  """
  encoder_rng, decoder_rng = jax.random.split(rng)
  encoder, decoder = EncoderDecoder(encoder_config), EncoderDecoder(decoder_config)
  input_segmentation = segmentation_or_default(inputs, None)
  decoder_segmentation = segmentation_or_default(decoder_inputs, None)
  encoder_params = nn.meta.unbox(encoder.init(encoder_rng, inputs, method="encode"))["params"]
  encoded, encoder_state = encoder.apply(
      {"params": encoder_params}, inputs, method="encode", capture_intermediates=_captured,
      mutable=["intermediates"])
  decoder_params = nn.meta.unbox(decoder.init(
      decoder_rng, encoded, input_segmentation, decoder_inputs, method="decode"))["params"]
  # One vocabulary, one table: the decoder embeds (and projects) with the encoder's embedding.
  decoder_params = {**decoder_params, "token_embedding": encoder_params["token_embedding"]}
  logits, decoder_state = decoder.apply(
      {"params": decoder_params}, encoded, input_segmentation, decoder_inputs, method="decode",
      capture_intermediates=_captured, mutable=["intermediates"])
  sown = {"encoder": encoder_state["intermediates"], "decoder": decoder_state["intermediates"]}
  blocks = {"encoder.self_attention": (input_segmentation, input_segmentation, False),
            "decoder.self_attention": (decoder_segmentation, decoder_segmentation, True),
            "decoder.cross_attention": (decoder_segmentation, input_segmentation, False)}

  def attention(block: str) -> dict:
    stack, name = block.split(".")
    return sown[stack][stack]["layer_0"][name]

  return {
      "encoder_params": encoder_params, "decoder_params": decoder_params, **sown,
      "logits": logits, "probabilities": jax.nn.softmax(logits, axis=-1),
      "positional_encodings": {
          "encoder": sinusoidal_positions(positions_or_default(inputs, None),
                                          encoder_config.d_model),
          "decoder": sinusoidal_positions(positions_or_default(decoder_inputs, None),
                                          decoder_config.d_model)},
      "masks": {block: make_attention_mask(*args) for block, args in blocks.items()},
      # The model's own einsum (attention_weights), on the sown Q and K, before it scales.
      "qk": {block: jnp.einsum("bqhd,bkhd->bhqk", attention(block)["q"][0],
                               attention(block)["k"][0]) for block in blocks},
  }


def _value(tree: dict, *path: str) -> np.ndarray:
  """The array at `path` (a sown or captured value is a 1-tuple), batch dimension dropped."""
  for name in path:
    tree = tree[name]
  (value,) = tree if isinstance(tree, tuple) else (tree,)
  return np.asarray(value[0])


def _embedding_steps(stack: str, run: dict, tokens: tuple[str, ...], d_model: int) -> list[Step]:
  """Token embeddings, sinusoidal positions and their sum (the stack's input)."""
  return [
      Step(f"{stack}.embeddings", stack, "embeddings E[ids] * sqrt(d_model)",
           _value(run, stack, "token_embedding", "__call__"), tokens,
           note=f"paper §3.4: the table row times sqrt(d_model) = {np.sqrt(d_model):.4f}"),
      Step(f"{stack}.positional_encodings", stack, "positional encodings PE",
           _value(run, "positional_encodings", stack), tokens,
           note="PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(same)"),
      Step(f"{stack}.embedded", stack, "X = embeddings + PE", _value(run, stack, stack, "embedded"),
           tokens, note="the input of the first layer (dropout is off)"),
  ]


def _attention_steps(block: str, title: str, run: dict, rows: tuple[str, ...],
                     cols: tuple[str, ...], notes: dict[str, str]) -> list[Step]:
  """Per head: Q, K, V, Q K^T, scaled scores, (mask), weights, weighted values; then concat, W^O.

  Args:
    block: 'encoder.self_attention', 'decoder.self_attention' or 'decoder.cross_attention'.
    title: printed name of the block.
    run: the output of `_run_models`, as NumPy.
    rows, cols: query tokens and key tokens.
    notes: extra notes by step name ('q', 'k', 'mask', 'scaled_scores'), shown on the first head.
  """
  stack, name = block.split(".")
  sown = run[stack][stack]["layer_0"][name]
  q, k, v = _value(sown, "q"), _value(sown, "k"), _value(sown, "v")  # [len, heads, d_k]
  scores, weights = _value(sown, "scaled_scores"), _value(sown, "weights")  # [heads, q, k]
  weighted = _value(sown, "weighted_values")  # [q_len, heads, d_v]
  qk = _value(run, "qk", block)  # [heads, q_len, kv_len]
  heads, d_k = q.shape[1], q.shape[2]
  steps = []
  for h in range(heads):
    first = h == 0

    def step(what: str, label: str, value: np.ndarray, step_rows: tuple[str, ...],
             step_cols: tuple[str, ...] = (), note: str = "", h: int = h,
             first: bool = first) -> Step:
      return Step(f"{block}.head{h + 1}.{what}", stack,
                  f"{title} · head {h + 1}/{heads} · {label}", value, step_rows, step_cols,
                  note or (notes.get(what, "") if first else ""))

    steps += [
        step("q", f"Q = X_q W^Q_{h + 1} + b", q[:, h], rows),
        step("k", f"K = X_kv W^K_{h + 1} + b", k[:, h], cols),
        step("v", f"V = X_kv W^V_{h + 1} + b", v[:, h], cols),
        step("qk", "Q K^T", qk[h], rows, cols),
        step("scaled_scores", f"Q K^T / sqrt(d_k), d_k = {d_k}; masked: -inf", scores[h], rows,
             cols),
    ]
    if first:
      steps.append(Step(f"{block}.mask", stack, f"{title} · mask (1 = may attend)",
                        _value(run, "masks", block)[0], rows, cols,
                        notes["mask"] + (" Same for every head." if heads > 1 else "")))
    steps += [
        step("weights", "softmax weights", weights[h], rows, cols,
             "softmax of each row; a masked score (-inf) gets weight 0" if first else ""),
        step("weighted_values", "weighted values = weights V", weighted[:, h], rows),
    ]
  return steps + [
      Step(f"{block}.concat", stack, f"{title} · Concat(head_1..head_{heads})",
           weighted.reshape(weighted.shape[0], -1), rows,
           note=f"{heads} head(s) of d_v = {d_k}, side by side"),
      Step(f"{block}.output", stack, f"{title} · output projection Concat W^O + b^O",
           _value(sown, "out", "__call__"), rows),
      Step(f"{block}.add_norm", stack, f"{title} · add & norm: LayerNorm(X + sublayer(X))",
           _value(run, stack, stack, "layer_0", f"{name}_add_norm"), rows, note=_NORM_NOTE),
  ]


_NORM_NOTE = ("LayerNorm of each row: (y - mean) / sqrt(var + 1e-6) * gain + bias "
              "(gain 1, bias 0 at init)")


def _ffn_steps(stack: str, run: dict, rows: tuple[str, ...], d_ff: int) -> list[Step]:
  """FFN hidden (before ReLU) and output, then add & norm."""
  layer = run[stack][stack]["layer_0"]
  return [
      Step(f"{stack}.ffn.hidden", stack, "FFN hidden x W1 + b1 (before ReLU)",
           _value(layer, "ffn", "wi", "__call__"), rows,
           note=f"paper §3.3: a two-layer FFN, max(0, x W1 + b1) W2 + b2, with d_ff = {d_ff}"),
      Step(f"{stack}.ffn.output", stack, "FFN output max(0, x W1 + b1) W2 + b2",
           _value(layer, "ffn", "__call__"), rows, note="the same two layers at every position"),
      Step(f"{stack}.ffn.add_norm", stack, "FFN · add & norm: LayerNorm(X + FFN(X))",
           _value(layer, "ffn_add_norm"), rows, note=_NORM_NOTE),
  ]


def walkthrough(inputs: str = "when you play the game of thrones",
                targets: str = "you win or you die", d_model: int = 6, encoder_heads: int = 1,
                decoder_heads: int = 2, d_ff: int | None = None, seed: int = 0) -> Walk:
  """Runs the walk of the tutorial's example and returns every matrix it prints.

  Args:
    inputs: the encoder's sentence (words split on whitespace).
    targets: the decoder's sentence; it reads '<start> targets' and predicts 'targets <end>'.
    d_model: model width (even, for the sinusoidal positions).
    encoder_heads: heads of the encoder walk's model.
    decoder_heads: heads of the decoder walk's model (masked self- and cross-attention).
    d_ff: FFN inner width; default 4 * d_model (the paper's ratio, 2048 / 512).
    seed: seed of the random parameters ('rbg' keys: far cheaper to compile than threefry).

  Returns:
    The Walk; its steps in the order they print.
  """
  vocabulary = build_vocabulary(inputs, targets)
  ids = {word: i for i, word in enumerate(vocabulary)}
  input_tokens = tuple(inputs.split())
  decoder_tokens = (SPECIAL_TOKENS[BOS_ID],) + tuple(targets.split())
  target_tokens = tuple(targets.split()) + (SPECIAL_TOKENS[EOS_ID],)
  input_ids, decoder_ids, target_ids = (np.array([ids[w] for w in tokens], np.int32)
                                        for tokens in (input_tokens, decoder_tokens, target_tokens))
  d_ff = d_ff or 4 * d_model
  encoder_config, decoder_config = walk_configs(len(vocabulary), d_model, encoder_heads,
                                                decoder_heads, d_ff)
  run_models = jax.jit(_run_models, static_argnums=(0, 1), compiler_options=(
      _CPU_FAST_COMPILE if jax.default_backend() == "cpu" else None))
  run = jax.device_get(run_models(encoder_config, decoder_config, jax.random.key(seed, impl="rbg"),
                                  input_ids[None], decoder_ids[None]))
  probabilities = _value(run, "probabilities")
  steps = [
      Step("vocabulary", "vocabulary", "vocabulary: id of each word",
           np.arange(len(vocabulary)), cols=vocabulary,
           note="special tokens at the project's reserved ids, then the words of both sentences"),
      Step("encoder.ids", "encoder", "input ids", input_ids, cols=input_tokens),
      *_embedding_steps("encoder", run, input_tokens, d_model),
      *_attention_steps(
          "encoder.self_attention", "self-attention", run, input_tokens, input_tokens,
          {"q": "rows are tokens (X W); the notes' W X^T holds the same numbers transposed",
           "scaled_scores": "paper: divide by sqrt(d_k) = sqrt(d_model / heads); the notes use "
                            "the embedding size d_model",
           "mask": "the encoder masks only padding; there is none here."}),
      *_ffn_steps("encoder", run, input_tokens, d_ff),
      Step("decoder.ids", "decoder", "decoder input ids: <start> + target", decoder_ids,
           cols=decoder_tokens, note="the target shifted right; <start> is the model's BOS id"),
      Step("decoder.target_ids", "decoder", "target ids: target + <end>", target_ids,
           cols=target_tokens, note="what each decoder position should predict"),
      *_embedding_steps("decoder", run, decoder_tokens, d_model),
      *_attention_steps(
          "decoder.self_attention", "masked self-attention", run, decoder_tokens, decoder_tokens,
          {"mask": "causal: position i sees positions <= i, never a later word."}),
      *_attention_steps(
          "decoder.cross_attention", "cross-attention", run, decoder_tokens, input_tokens,
          {"q": "paper: Q from the decoder, K and V from the encoder output (the notes swap them)",
           "k": "from the encoder's last add & norm",
           "mask": "only encoder padding is masked; there is none here."}),
      *_ffn_steps("decoder", run, decoder_tokens, d_ff),
      Step("output.logits", "output", "logits = X E^T (tied embedding)", _value(run, "logits"),
           decoder_tokens, vocabulary, "paper: the same projection at each position (row), not "
                                       "one over the flattened matrix as in the notes"),
      Step("output.probabilities", "output", "softmax(logits)", probabilities, decoder_tokens,
           vocabulary, "the model leaves softmax to the loss; computed here, per row"),
      Step("output.predicted", "output", "predicted id (argmax) after each decoder input",
           probabilities.argmax(-1), ("id",), decoder_tokens,
           "random, untrained params: the words are arbitrary until the model is trained"),
  ]
  return Walk(vocabulary, input_ids, decoder_ids, target_ids, encoder_config, decoder_config,
              run["encoder_params"], run["decoder_params"], tuple(steps))


def _cell(value: np.generic) -> str:
  """One matrix entry: ints and bools as ints, floats with 4 decimals, the mask fill as -inf."""
  if np.issubdtype(np.asarray(value).dtype, np.floating):
    return "-inf" if value <= _MASKED else f"{value:.4f}"
  return str(int(value))


def format_step(number: int, step: Step) -> str:
  """'[n] title [shape]', its note, and the matrix with token labels on rows and columns."""
  value = step.value if step.value.ndim == 2 else step.value[None]
  rows = step.rows or ("",) * value.shape[0]
  cols = step.cols or tuple(str(j) for j in range(value.shape[1]))
  cells = [[_cell(x) for x in row] for row in value]
  width = max(len(c) for c in (*cols, *(c for row in cells for c in row)))
  label_width = max(len(r) for r in rows)
  lines = [f"[{number}] {step.title}  {list(step.value.shape)}"]
  if step.note:
    lines.append(f"    # {step.note}")
  lines.append(" " * (label_width + 4) + " ".join(c.rjust(width) for c in cols))
  lines += [f"    {r.ljust(label_width)} " + " ".join(c.rjust(width) for c in row)
            for r, row in zip(rows, cells)]
  return "\n".join(lines)


def format_walk(walk: Walk) -> str:
  """The whole walkthrough as text: a banner per section, then each step."""
  banners = {
      "vocabulary": "VOCABULARY",
      "encoder": f"ENCODER: {walk.encoder_config.num_encoder_layers} layer, "
                 f"d_model {walk.encoder_config.d_model}, "
                 f"{walk.encoder_config.num_heads} head(s)",
      "decoder": f"DECODER: {walk.decoder_config.num_decoder_layers} layer, "
                 f"d_model {walk.decoder_config.d_model}, "
                 f"{walk.decoder_config.num_heads} head(s), reading the encoder output above",
      "output": "OUTPUT: the predicted word",
  }
  parts, section = [], None
  for number, step in enumerate(walk.steps, 1):
    if step.section != section:
      section = step.section
      parts.append(f"\n{'=' * 8} {banners[section]} {'=' * 8}")
    parts.append(format_step(number, step))
  (predicted,) = (step.value for step in walk.steps if step.key == "output.predicted")
  parts.append(f"\npredicted words: {' '.join(walk.vocabulary[i] for i in predicted)}\n"
               f"first prediction after <start>: {walk.vocabulary[predicted[0]]!r}  "
               f"(trained target: {walk.vocabulary[walk.targets[0]]!r})")
  return "\n".join(parts).lstrip("\n")


def _heatmap(path: str, title: str, panels: dict[str, Step], limits: tuple[float, float],
             xlabel: str, ylabel: str) -> None:
  """Writes one PNG: a heatmap per step of `panels` (keyed by panel title), one colorbar."""
  figure = Figure(figsize=(1.0 + 3.6 * len(panels), 4.0), layout="constrained")
  axes = figure.subplots(1, len(panels), squeeze=False)[0]
  for ax, (panel, step) in zip(axes, panels.items()):
    image = ax.imshow(step.value, cmap="viridis", vmin=limits[0], vmax=limits[1])
    ax.set_title(panel, fontsize=10)
    ax.set_xticks(range(step.value.shape[1]), step.cols or range(step.value.shape[1]),
                  rotation=45, ha="right")
    ax.set_yticks(range(step.value.shape[0]), step.rows)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    for (i, j), x in np.ndenumerate(step.value):
      ax.text(j, i, f"{x:.2f}", ha="center", va="center", fontsize=7,
              color="black" if image.norm(x) > 0.6 else "white")
  figure.colorbar(image, ax=axes, shrink=0.8)
  figure.suptitle(title)
  figure.savefig(path, dpi=110)


def plot_heatmaps(walk: Walk, plot_dir: str) -> list[str]:
  """Writes a PNG per attention block (a panel per head) and one of the positional encodings.

  Returns:
    The written paths: '<stack>_<block>.png' for each attention block, 'positional_encodings.png'.
  """
  os.makedirs(plot_dir, exist_ok=True)
  blocks: dict[str, dict[str, Step]] = {}
  for step in walk.steps:
    if step.key.endswith(".weights"):
      block, head, _ = step.key.rsplit(".", 2)
      blocks.setdefault(block, {})[head.replace("head", "head ")] = step
  paths = []
  for block, heads in blocks.items():
    paths.append(os.path.join(plot_dir, block.replace(".", "_") + ".png"))
    first = next(iter(heads.values()))
    _heatmap(paths[-1], f"{first.section} {first.title.split(' · ')[0]}: softmax weights per head",
             heads, (0.0, 1.0), "key", "query")
  positions = {s.section: s for s in walk.steps if s.key.endswith(".positional_encodings")}
  paths.append(os.path.join(plot_dir, "positional_encodings.png"))
  _heatmap(paths[-1], "sinusoidal positional encodings", positions, (-1.0, 1.0), "dimension",
           "position")
  return paths
