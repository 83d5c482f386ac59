"""Build SIDs: item embeddings -> residual quantisation -> collision-free SIDs in the MiniOneRec layout.

The library behind ``python -m rec_lightning build-sids`` (and ``prepare --build_sids``).

Writes ``<output>/index/<Category>.index.json`` (0-based codes ``<a_i><b_j><c_k>``, plus ``<d_r>`` only
where the extra level resolves a collision), ``<output>/info/<Category>*.txt`` (``SID\\ttitle\\titem_id``
by item id), ``sid_report.json``, ``sid_first_level_histogram.png`` and the codebooks; with
``--rewrite_data`` re-keyed copies of the split CSVs. Sources are never modified; every file is
written atomically (:mod:`rec_lightning.files.atomic`).

Core layer: no Lightning. The ``rq-vae`` method trains a LightningModule, so :func:`build_sids` takes it as
``fit_rqvae`` (:func:`rec_lightning.modules.rqvae.fit_rqvae`); ``rq-kmeans-plus`` likewise takes
``fit_rqkmeans_plus`` (:func:`rec_lightning.modules.rqkmeans_plus.fit_rqkmeans_plus`); the k-means methods need
nothing more.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from rec_lightning.errors import ConfigurationError, DataValidationError
from rec_lightning.files.atomic import write_bytes_atomic, write_text_atomic

#: ``torch.Tensor`` in annotations: torch loads inside the functions that use it, so that build-sids' --help and
#: argument errors stay fast (jsonargparse resolves :class:`RQVAEOptions`' module annotations, TYPE_CHECKING blocks
#: included).
Tensor = Any

log = logging.getLogger(__name__)
METHODS = ("rq-kmeans", "rq-kmeans-balanced", "rq-vae", "rq-kmeans-plus")


@dataclass
class RQVAEOptions:
    """Settings of the ``rq-vae`` method (ignored by the k-means methods)."""

    epochs: int = 300
    """Training epochs."""
    batch_size: int = 4096
    """Items per step; >= the item count means full batch (as the original)."""
    lr: float = 1e-3
    """AdamW learning rate."""
    hidden_dims: tuple[int, ...] = (512, 256, 128)
    """Encoder hidden sizes (the decoder mirrors them)."""
    latent_dim: int = 32
    """Code dimension."""
    commitment_coef: float = 0.25
    """Weight of the commitment loss."""
    accelerator: str = "auto"
    """Lightning accelerator: auto, cpu, gpu."""
    max_steps: int = 2000
    """At most this many optimizer steps (-1: no cap). Industrial's 3.7k items take 300 full-batch steps either way;
    at 10^5 items (25 steps per epoch) the cap bounds the construction time instead of 7,500 steps."""

    def check(self) -> None:
        """Raises ConfigurationError for an option out of range (the message names the command-line option)."""
        problems = [f"--rqvae.{name} must be {rule}, got {value!r}" for name, value, ok, rule in (
            ("epochs", self.epochs, self.epochs >= 1, ">= 1"),
            ("batch_size", self.batch_size, self.batch_size >= 1, ">= 1"),
            ("lr", self.lr, self.lr > 0, "> 0"),
            ("hidden_dims", self.hidden_dims, all(d >= 1 for d in self.hidden_dims), "positive sizes, e.g. [512, 256, 128]"),
            ("latent_dim", self.latent_dim, self.latent_dim >= 1, ">= 1"),
            ("commitment_coef", self.commitment_coef, self.commitment_coef >= 0, ">= 0"),
            ("max_steps", self.max_steps, self.max_steps == -1 or self.max_steps >= 1, ">= 1 or -1 (no cap)"),
        ) if not ok]
        if problems:
            raise ConfigurationError("; ".join(problems))


@dataclass
class RQKMeansPlusOptions:
    """Settings of the ``rq-kmeans-plus`` method (MiniOneRec's RQ-KMeans+; ignored by the other methods)."""

    epochs: int = 200
    """Training epochs (0: the balanced RQ-KMeans warm start, codes by argmin). MiniOneRec: 10000 on a GPU."""
    batch_size: int = 1024
    """Items per step; >= the item count means full batch. MiniOneRec: 2048."""
    lr: float = 1e-4
    """AdamW learning rate (MiniOneRec's 1e-4: the warm start is already a good solution)."""
    hidden_dims: tuple[int, ...] = (512,)
    """Hidden sizes of the residual encoder's and decoder's MLPs (latent dim = embedding dim)."""
    commitment_coef: float = 0.25
    """Weight of the commitment loss."""
    eval_every_n_epochs: int = 1
    """Full-data reconstruction error every this many epochs; the best state (step 0 included) is kept."""
    accelerator: str = "auto"
    """Lightning accelerator: auto, cpu, gpu."""
    max_steps: int = 1000
    """At most this many optimizer steps (-1: no cap). Industrial's 3.7k items take 4 x 200 = 800 steps either way;
    at 10^5 items (98 steps per epoch) the cap bounds the construction time (about 10 epochs)."""

    def check(self) -> None:
        """Raises ConfigurationError for an option out of range (the message names the command-line option)."""
        problems = [f"--rqkmeans_plus.{name} must be {rule}, got {value!r}" for name, value, ok, rule in (
            ("epochs", self.epochs, self.epochs >= 0, ">= 0"),
            ("batch_size", self.batch_size, self.batch_size >= 1, ">= 1"),
            ("lr", self.lr, self.lr > 0, "> 0"),
            ("hidden_dims", self.hidden_dims, all(d >= 1 for d in self.hidden_dims), "positive sizes, e.g. [512]"),
            ("commitment_coef", self.commitment_coef, self.commitment_coef >= 0, ">= 0"),
            ("eval_every_n_epochs", self.eval_every_n_epochs, self.eval_every_n_epochs >= 1, ">= 1"),
            ("max_steps", self.max_steps, self.max_steps == -1 or self.max_steps >= 1, ">= 1 or -1 (no cap)"),
        ) if not ok]
        if problems:
            raise ConfigurationError("; ".join(problems))


@dataclass
class Quantised:
    """A quantiser's result: the codes and what collision repair needs (on CPU)."""

    codes: Tensor  # [N, L]
    last_residual: Tensor  # [N, D]
    codebooks: list[Tensor]  # L x [K, D]
    relative_error: float  # ||x - x_hat||^2 / ||x||^2 (k-means: embedding space; rq-vae, rq-kmeans-plus: decoder output)
    extra: dict


def load_embeddings(path: str | Path) -> Tensor:
    """Read an ``[N, D]`` float ``.npy`` (row = item id) strictly.

    Raises:
        DataValidationError: missing file, wrong shape or dtype, NaN/Inf rows.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise DataValidationError(path, ["the embeddings file does not exist"],
                                  fix="create it with `python -m rec_lightning embed-items`")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DataValidationError(path, [f"not a readable .npy array: {err}"], fix="write it with numpy.save") from None
    if array.ndim != 2 or array.shape[0] < 2 or not np.issubdtype(array.dtype, np.floating):
        raise DataValidationError(path, [f"expected a float array [num_items >= 2, dim], got {array.dtype} {array.shape}"],
                                  fix="one row per item id, e.g. from `python -m rec_lightning embed-items`")
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad.size:
        raise DataValidationError(path, [f"rows {bad[:5].tolist()} (item ids) hold NaN or Inf ({bad.size} rows)"],
                                  fix="re-embed those items (float32 encoder)")
    return torch.from_numpy(array.astype(np.float32))


def quantise(x: Tensor, method: str, levels: int, codebook_size: int, seed: int, kmeans_iters: int,
             sinkhorn_epsilon: float, rqvae: RQVAEOptions, progress: bool, device: str = "cpu",
             fit_rqvae: Callable[..., Quantised] | None = None, kmeans_change_tol: float = 0.0,
             kmeans_max_points_per_code: int = 256,
             rqkmeans_plus: RQKMeansPlusOptions | None = None,
             fit_rqkmeans_plus: Callable[..., Quantised] | None = None) -> Quantised:
    """Run one quantiser on ``x [N, D]`` and return its codes and what collision repair needs (on CPU).

    ``rq-vae`` calls ``fit_rqvae(x, levels, codebook_size, seed, rqvae, progress)``
    (:func:`rec_lightning.modules.rqvae.fit_rqvae`). ``rq-kmeans-plus`` runs ``rq-kmeans-balanced`` then
    ``fit_rqkmeans_plus(x, levels, codebook_size, seed, rqkmeans_plus, progress, codebooks)``
    (:func:`rec_lightning.modules.rqkmeans_plus.fit_rqkmeans_plus`) from its codebooks.
    """
    from rec_lightning.sids.quantize import fit_residual_kmeans

    if method == "rq-kmeans-plus":
        rqkmeans_plus = rqkmeans_plus or RQKMeansPlusOptions()
        rqkmeans_plus.check()
        if fit_rqkmeans_plus is None:
            raise ConfigurationError("method rq-kmeans-plus needs fit_rqkmeans_plus "
                                     "(rec_lightning.modules.rqkmeans_plus.fit_rqkmeans_plus)")
        warm = quantise(x, "rq-kmeans-balanced", levels, codebook_size, seed, kmeans_iters, sinkhorn_epsilon, rqvae,
                        progress, device, kmeans_change_tol=kmeans_change_tol,
                        kmeans_max_points_per_code=kmeans_max_points_per_code)
        q = fit_rqkmeans_plus(x, levels, codebook_size, seed, rqkmeans_plus, progress, warm.codebooks)
        q.extra.update(kmeans_iterations=warm.extra["kmeans_iterations"], kmeans_fit_items=warm.extra["kmeans_fit_items"],
                       balanced_kmeans_error=warm.relative_error)
        return q
    if method in ("rq-kmeans", "rq-kmeans-balanced"):
        fitted = fit_residual_kmeans(x.to(device), levels, codebook_size, seed, balanced=method == "rq-kmeans-balanced",
                                     max_iters=kmeans_iters, sinkhorn_epsilon=sinkhorn_epsilon,
                                     change_tol=kmeans_change_tol, max_points_per_code=kmeans_max_points_per_code)
        error = float(((x - fitted.reconstruction.cpu()) ** 2).sum() / (x ** 2).sum())
        return Quantised(fitted.codes.cpu(), fitted.last_residual.cpu(), [c.cpu() for c in fitted.codebooks], error,
                         {"kmeans_iterations": list(fitted.num_iters), "kmeans_fit_items": fitted.fit_items})
    rqvae.check()
    if fit_rqvae is None:
        raise ConfigurationError("method rq-vae needs fit_rqvae (rec_lightning.modules.rqvae.fit_rqvae)")
    return fit_rqvae(x, levels, codebook_size, seed, rqvae, progress)


def build_sids(embeddings: str, output: str,
               method: Literal["rq-kmeans", "rq-kmeans-balanced", "rq-vae", "rq-kmeans-plus"] = "rq-kmeans-balanced",
               levels: int = 3, codebook_size: int = 256, collision: Literal["reassign", "extra-level"] = "reassign",
               data_dir: str | None = None, category: str | None = None, rewrite_data: bool = False, seed: int = 0,
               kmeans_iters: int = 100, sinkhorn_epsilon: float = 0.05, rqvae: RQVAEOptions = RQVAEOptions(),
               device: str = "cpu", progress: bool = True, fit_rqvae: Callable[..., Quantised] | None = None,
               kmeans_change_tol: float = 0.0, kmeans_max_points_per_code: int = 256,
               rqkmeans_plus: RQKMeansPlusOptions = RQKMeansPlusOptions(),
               fit_rqkmeans_plus: Callable[..., Quantised] | None = None) -> dict:
    """Quantise item embeddings into SIDs, resolve collisions with a guarantee, and write the index.

    Args:
        embeddings: ``.npy`` ``[num_items, dim]``, row = item id (from ``embed-items``).
        output: output folder (MiniOneRec layout); created if needed, must not be ``data_dir``.
        method: ``rq-kmeans`` (residual k-means), ``rq-kmeans-balanced`` (each level's clusters hold
            floor(N/K) or ceil(N/K) items), ``rq-vae`` (residual-quantised autoencoder) or ``rq-kmeans-plus``
            (MiniOneRec's RQ-KMeans+: an RQ-VAE with residual encoder and decoder, warm-started from the
            ``rq-kmeans-balanced`` codebooks).
        levels: residual levels.
        codebook_size: codes per level K.
        collision: ``reassign`` (move colliders to the nearest unused last-level code of their parent;
            extra level only for parents with more than K items) or ``extra-level`` (MiniOneRec's
            ``<d_r>`` on every member of a colliding group). Both guarantee unique SIDs.
        data_dir: source folder (MiniOneRec layout) for titles (info file) and ``--rewrite_data``.
        category: category name; default: from the embeddings' ``.json`` sidecar.
        rewrite_data: write re-keyed copies of the source split CSVs into ``output``.
        seed: seed of every random choice.
        kmeans_iters: Lloyd iterations per level (k-means methods, and RQ-VAE's initialisation uses 50).
        sinkhorn_epsilon: entropy weight of the balanced assignment.
        rqvae: RQ-VAE settings.
        device: torch device of the k-means methods (``cpu``, ``cuda``); RQ-VAE uses ``rqvae.accelerator``.
        progress: show progress bars.
        fit_rqvae: the ``rq-vae`` trainer, :func:`rec_lightning.modules.rqvae.fit_rqvae` (unused by k-means).
        kmeans_change_tol: k-means methods: a level stops once at most this fraction of items changed code in
            a Lloyd iteration (0: only when none changed, or after ``kmeans_iters``).
        kmeans_max_points_per_code: k-means methods: with more than this many items per code (x ``codebook_size``)
            a level's centroids are fitted on a seeded sample of that size, then every item is assigned once
            (faiss' rule, 256); 0: fit on every item. Below the threshold (65,536 items at K=256) it changes nothing.
        rqkmeans_plus: RQ-KMeans+ settings.
        fit_rqkmeans_plus: the ``rq-kmeans-plus`` trainer,
            :func:`rec_lightning.modules.rqkmeans_plus.fit_rqkmeans_plus` (unused by the other methods).

    Returns:
        The report written to ``sid_report.json`` (:func:`format_report` prints it).

    Raises:
        ConfigurationError: inconsistent arguments (the message names the command-line option).
        DataValidationError: unreadable embeddings, source folder or split CSVs.
    """
    from rec_lightning.sids.collisions import code_tokens, resolve_collisions, sid_statistics

    out = check_arguments(output, method, data_dir, rewrite_data, kmeans_change_tol, kmeans_max_points_per_code)
    x = load_embeddings(embeddings)
    category = category or category_from_sidecar(embeddings)
    titles, source_files = read_source(data_dir, category, x.shape[0])

    log.info("quantising %d x %d embeddings with %s (%d levels x %d codes, seed %d)", x.shape[0], x.shape[1],
             method, levels, codebook_size, seed)
    start = time.perf_counter()
    q = quantise(x, method, levels, codebook_size, seed, kmeans_iters, sinkhorn_epsilon, rqvae, progress, device,
                 fit_rqvae, kmeans_change_tol, kmeans_max_points_per_code, rqkmeans_plus, fit_rqkmeans_plus)
    quantise_seconds = time.perf_counter() - start
    resolution = resolve_collisions(collision, q.codes, q.last_residual, q.codebooks[-1])
    base = [tuple(r) for r in q.codes.tolist()]
    index = {str(i): code_tokens(code) for i, code in enumerate(resolution.codes)}

    report = {"method": method, "levels": levels, "codebook_size": codebook_size, "seed": seed, "device": device,
              "embeddings": str(embeddings), "embedding_dim": int(x.shape[1]), "category": category,
              "collision": {"method": collision, "guarantee": resolution.guarantee, "num_moved": resolution.num_moved,
                            "num_extra_level": resolution.num_extra_level},
              "relative_quantisation_error": q.relative_error, "quantise_seconds": round(quantise_seconds, 2),
              **sid_statistics(base, resolution.codes, codebook_size)}
    if "kmeans_iterations" in q.extra:
        report["kmeans_iterations"] = q.extra["kmeans_iterations"]  # Lloyd iterations per level
        report["kmeans_fit_items"] = q.extra["kmeans_fit_items"]
    if method == "rq-vae":
        report["rqvae"] = {**asdict(rqvae), "final_metrics": q.extra["rqvae_final_metrics"]}
    if method == "rq-kmeans-plus":
        report["rqkmeans_plus"] = {**asdict(rqkmeans_plus), **{k: q.extra[k] for k in (
            "balanced_kmeans_error", "warm_start_error", "final_error", "last_epoch_error", "epochs_run", "steps_run", "best_epoch")}}
    write_outputs(out, category, index, titles, source_files, report, q)
    if rewrite_data:
        report["rewritten"] = rewrite_splits(data_dir, category, out, index, source_files)
    write_text_atomic(out / "sid_report.json", json.dumps(report, indent=2) + "\n")
    return report


def check_arguments(output: str, method: str, data_dir: str | None, rewrite_data: bool,
                    kmeans_change_tol: float = 0.0, kmeans_max_points_per_code: int = 0) -> Path:
    """The output folder, after checking the arguments that do not need any file.

    Raises:
        ConfigurationError: unknown method, a ``.json`` output, ``rewrite_data`` without ``data_dir``, the
            output is the source folder, ``kmeans_change_tol`` outside [0, 1) or ``kmeans_max_points_per_code`` < 0.
    """
    if method not in METHODS:
        raise ConfigurationError(f"--method must be one of {METHODS}, got {method!r}")
    if not 0.0 <= kmeans_change_tol < 1.0:
        raise ConfigurationError(f"--kmeans_change_tol is a fraction of the items in [0, 1) (0: stop only when no "
                                 f"code changes; e.g. 0.01), got {kmeans_change_tol}")
    if kmeans_max_points_per_code < 0:
        raise ConfigurationError(f"--kmeans_max_points_per_code is >= 0 (0: fit the centroids on every item; default "
                                 f"256 per code, as faiss), got {kmeans_max_points_per_code}")
    out = Path(output)
    if out.suffix == ".json":
        raise ConfigurationError(f"--output is a folder (MiniOneRec layout: index/<Category>.index.json, info/...), "
                                 f"got {output!r}")
    if rewrite_data and data_dir is None:
        raise ConfigurationError("--rewrite_data needs --data_dir (the folder whose split CSVs are re-keyed)")
    if data_dir is not None and out.resolve() == Path(data_dir).resolve():
        raise ConfigurationError(f"--output {output} is the source --data_dir; choose a new folder "
                                 f"(sources are never modified)")
    return out


def category_from_sidecar(embeddings: str) -> str:
    sidecar = Path(embeddings).with_suffix(".json")
    if sidecar.is_file():
        category = json.loads(sidecar.read_text()).get("category")
        if isinstance(category, str) and category:
            return category
    raise DataValidationError(embeddings, ["no category given and no .json sidecar from embed-items names one"],
                              fix="pass --category NAME")


def read_source(data_dir: str | None, category: str, num_items: int) -> tuple[dict[int, str], dict]:
    """Titles ``{item_id: title}`` and the source file paths (item.json, info, splits) if ``data_dir``."""
    if data_dir is None:
        return {}, {}
    from rec_lightning.files.layout import SPLITS, find_category_files, find_split_csv
    from rec_lightning.sids.codec import read_item_json

    root = Path(data_dir)
    if not root.is_dir():
        raise DataValidationError(root, ["the data folder does not exist"], fix="pass an existing --data_dir")
    item_path = root / "index" / f"{category}.item.json"
    try:
        info_path = find_category_files(root, category).info
    except DataValidationError:  # a new catalog has no index yet, hence no info file either
        info_path = None
    files = {"item": item_path if item_path.is_file() else None, "info": info_path, "splits": {}}
    if files["item"] is not None:
        titles, _ = read_item_json(item_path, index={})
    elif info_path is not None:
        lines = [line.split("\t") for line in info_path.read_text(encoding="utf-8").splitlines() if line.strip()]
        titles = {int(f[2]): f[1].strip() for f in lines if len(f) == 3 and f[2].strip().isdigit()}
    else:
        raise DataValidationError(root / "index" / f"{category}.item.json", ["neither item.json nor an info file found"],
                                  fix="check --data_dir and --category")
    if sorted(titles) != list(range(num_items)):
        raise DataValidationError(files["item"] or info_path,
                                  [f"{len(titles)} items with ids {min(titles)}..{max(titles)}, but the embeddings have "
                                   f"{num_items} rows (row = item id)"],
                                  fix="embed this data folder's items (embed-items) or pass the matching --data_dir")
    for split in SPLITS:
        try:
            files["splits"][split] = find_split_csv(root, split, category)
        except DataValidationError:
            continue
    return titles, files


def write_outputs(out: Path, category: str, index: dict, titles: dict, files: dict, report: dict, q: Quantised) -> None:
    """Write the index, info file, item.json copy, codebooks, RQ-VAE weights and histogram into ``out``."""
    write_text_atomic(out / "index" / f"{category}.index.json", json.dumps(index) + "\n")
    info_name = files["info"].name if files.get("info") else f"{category}.txt"
    info = "".join(f"{''.join(tokens)}\t{titles.get(int(i), '')}\t{i}\n" for i, tokens in index.items())
    write_text_atomic(out / "info" / info_name, info)
    if files.get("item"):
        write_text_atomic(out / "index" / f"{category}.item.json", files["item"].read_text(encoding="utf-8"))
    buffer = io.BytesIO()
    np.savez(buffer, **{f"codebook_{level}": c.numpy() for level, c in enumerate(q.codebooks)})
    write_bytes_atomic(out / "sid_codebooks.npz", buffer.getvalue())
    if "module" in q.extra:
        from safetensors.torch import save

        state = {k: v.detach().cpu().contiguous() for k, v in q.extra.pop("module").state_dict().items()}
        name = "rqkmeans_plus" if report["method"] == "rq-kmeans-plus" else "rqvae"
        write_bytes_atomic(out / f"{name}.safetensors", save(state))
    write_bytes_atomic(out / "sid_first_level_histogram.png", histogram_png(report))


def histogram_png(report: dict) -> bytes:
    """A PNG bar chart of the items per first-level code."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = report["items_per_first_level_code"]
    fig, ax = plt.subplots(figsize=(10, 3.2))
    ax.bar(range(len(counts)), counts, width=1.0)
    ax.set_xlabel("first-level code (a)")
    ax.set_ylabel("items")
    ax.set_title(f"{report['category']}: {report['method']}, items per first-level code "
                 f"({report['level_stats'][0]['used_codes']}/{report['codebook_size']} codes used)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def rewrite_splits(data_dir: str | None, category: str, out: Path, index: dict, files: dict) -> dict:
    """Copy each split CSV with ``history_item_sid``/``item_sid`` recomputed from the item ids.

    Raises:
        ConfigurationError: no split CSVs to rewrite.
        DataValidationError: a CSV without the MiniOneRec columns, or an item id without a SID.
    """
    if not files.get("splits"):
        raise ConfigurationError(f"--rewrite_data: no split CSVs ({category}*.csv in train/, valid/, test/) under "
                                 f"{data_dir}")
    sid_of = {int(i): "".join(tokens) for i, tokens in index.items()}
    written = {}
    for split, path in files["splits"].items():
        text = path.read_text(encoding="utf-8")
        newline = "\r\n" if "\r\n" in text[: text.find("\n") + 1] else "\n"
        rows = list(csv.reader(io.StringIO(text, newline="")))
        header = rows[0]
        try:
            col = {name: header.index(name) for name in ("history_item_id", "item_id", "history_item_sid", "item_sid")}
        except ValueError as err:
            raise DataValidationError(path, [f"line 1 (header): {err}"], fix="use the MiniOneRec columns") from None
        problems = []
        for line, row in enumerate(rows[1:], start=2):
            try:
                history = [sid_of[int(i)] for i in ast.literal_eval(row[col["history_item_id"]])]
                row[col["item_sid"]] = sid_of[int(row[col["item_id"]])]
            except (ValueError, SyntaxError, KeyError, IndexError, TypeError) as err:
                problems.append(f"line {line}, columns history_item_id/item_id: cannot map to a new SID ({err!r})")
                continue
            row[col["history_item_sid"]] = repr(history)
        if problems:
            raise DataValidationError(path, problems, fix="the CSV's item ids must be in the embeddings")
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator=newline).writerows(rows)
        target = out / split / path.name
        write_text_atomic(target, buffer.getvalue())
        written[split] = str(target)
    return written


def format_report(report: dict) -> str:
    """The printed summary: settings, collisions, then one line per level."""
    c = report["collision"]
    lines = [
        f"{report['category']}: {report['method']}, {report['levels']} levels x {report['codebook_size']} codes, "
        f"{report['num_items']} items, seed {report['seed']}, {report['quantise_seconds']:.1f} s",
        f"collisions: {100 * report['collision_rate_before']:.2f}% before ({report['num_colliding_groups_before']} groups, "
        f"{report['num_colliding_items_before']} items, largest {report['max_group_size_before']}) -> "
        f"{100 * report['collision_rate_after']:.2f}% after '{c['method']}' ({c['num_moved']} moved, "
        f"{c['num_extra_level']} given an extra level)",
        f"guarantee: {c['guarantee']}",
        f"relative quantisation error {report['relative_quantisation_error']:.4f}; items per used first-level code "
        f"min/mean/max {report['items_per_used_first_level_code']['min']}/"
        f"{report['items_per_used_first_level_code']['mean']:.1f}/{report['items_per_used_first_level_code']['max']}",
        f"{'level':<6}{'items':>7}{'used/K':>10}{'util':>7}{'entropy':>9}{'norm':>7}{'max/code':>9}",
    ]
    for s in report["level_stats"]:
        lines.append(f"{s['level']:<6}{s['num_items']:>7}{s['used_codes']:>5}/{s['codebook_size']:<4}"
                     f"{s['utilisation']:>7.3f}{s['entropy_bits']:>9.3f}{s['normalized_entropy']:>7.3f}"
                     f"{s['max_items_per_code']:>9}")
    return "\n".join(lines)
