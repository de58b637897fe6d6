"""Score a large table of reviews on Apache Spark with the predictor's ONNX export: Parquet or CSV in, Parquet out.

    python src/score_spark.py --model models/distilbert-imdb --input reviews.parquet --output scored.parquet
    spark-submit --master spark://host:7077 src/score_spark.py --model models/distilbert-imdb \\
        --input hdfs:///reviews/ --output hdfs:///reviews-scored/

The output has every input column, in the input's row order, plus `label` and one `prob_<class>` column
per class (prob_neg, prob_pos). Rows whose text is empty or missing get nulls there, and are counted.
A review longer than the model's maxlen is read as the training run chose (all of it, in overlapping windows whose
logits are averaged, or the part training kept: onnx.json), or as --long-reviews says.
Locally (the default, `local[*]`) it needs `pip install -r requirements-spark.txt` and Java 17.
Each Spark executor loads the ONNX model once per Python worker and scores with ONNX Runtime:
no TensorFlow on the executors, only requirements-onnx.txt. Run `python src/export.py --model DIR` first.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import imdb_distilbert
from imdb_distilbert import cli, files
from imdb_distilbert.data import reading, windows
from imdb_distilbert.errors import UserError
from imdb_distilbert.inference import backends

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

SNIFF_BYTES = 1 << 22  # a CSV input's encoding is found from the first 4 MiB of its first file


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_model_option(p, "the predictor folder, exported with src/export.py")
    p.add_argument("--input", required=True, metavar="PATH", help="Parquet (a file or a folder of them) or CSV "
                   "(a path ending in .csv, with a header line); any path Spark reads, such as hdfs:// or s3a://")
    p.add_argument("--output", required=True, metavar="PATH",
                   help="where to write the scored rows, as a folder of Parquet files")
    p.add_argument("--text-column", metavar="NAME", help="the column holding the text (default: the text column "
                   "the predictor was trained on, train.py --text-column, else Reviews)")
    p.add_argument("--backend", choices=("onnx-int8", "onnx"), default="onnx-int8",
                   help="onnx-int8 (the default, about 2.6x faster) or onnx (fp32)")
    p.add_argument("--master", metavar="URL", help="Spark master (default: local[*], all cores of this machine; "
                   "under spark-submit, its --master)")
    p.add_argument("--partitions", type=int, metavar="N", help="split the rows into N tasks "
                   "(default: 4 per core Spark has, or the input's own number if larger)")
    p.add_argument("--batch-size", type=int, metavar="N", default=32, help="reviews per model call (default: 32)")
    cli.add_reading_options(p)
    p.add_argument("--min-confidence", type=float, metavar="P",
                   help="label a review 'uncertain' when its top probability is below P (as src/predict.py)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --output if it exists (only an output this script wrote)")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error("--batch-size must be at least 1")
    if args.partitions is not None and args.partitions < 1:
        p.error("--partitions must be at least 1")
    return args


def check_model(model_dir: str | Path, backend: str) -> None:
    """The model folder has the files the executors need; stop with one sentence if not."""
    backends.check_predictor_folder(model_dir)
    backends.check_onnx_export(model_dir, backend)


def long_reading(args: argparse.Namespace) -> windows.Reading:
    """How the executors read a review longer than maxlen: as the run chose (onnx.json, read as the ONNX backend
    reads it), with --long-reviews, --window-overlap and --max-windows instead where given. A bad value stops with
    one sentence, on the driver: main() asks before Spark starts."""
    settings = json.loads((Path(args.model) / backends.ONNX_SETTINGS).read_text())
    return backends.with_settings(windows.onnx_reading(settings), **cli.reading_of(args))


def pack_model(model_dir: Path, backend: str, folder: str | Path) -> Path:
    """A zip of what the ONNX backend reads (settings, tokenizer, model), for Spark to ship to executors."""
    settings = json.loads((model_dir / backends.ONNX_SETTINGS).read_text())
    archive = Path(folder) / f"predictor-{uuid.uuid4().hex[:8]}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:  # the ONNX files hardly compress
        for name in (backends.ONNX_SETTINGS, settings["tokenizer"], backends.ONNX_FILES[backend]):
            z.write(model_dir / name, name)
    return archive


def pack_code(folder: str | Path) -> Path:
    """This package's source, zipped for the executors' Python path: every .py file and template, no caches."""
    package = Path(imdb_distilbert.__file__).parent
    archive = Path(folder) / f"{package.name}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted(package.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                zipped.write(path, path.relative_to(package.parent))
    return archive


def session(master: str | None = None) -> SparkSession:
    """The active SparkSession, or a new one (local[*] unless `master` or spark-submit says otherwise)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise UserError("scoring on Spark needs pyspark; "
                        "install it with `pip install -r requirements-spark.txt`.") from None
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        raise UserError("Spark needs Java 17 or later, and none was found; install it (Debian/Ubuntu: "
                        "`apt-get install openjdk-17-jre-headless`) or set JAVA_HOME.")
    launched_by_spark_submit = "PYSPARK_GATEWAY_PORT" in os.environ
    if not launched_by_spark_submit and (master or "local").startswith("local"):
        # Local Python workers run `python3` from PATH by default, which may lack our packages: use this Python.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("imdb-distilbert scoring")
    if master:
        builder = builder.master(master)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def hadoop_fs(spark: SparkSession, path: str) -> tuple[Any, Any]:
    """(FileSystem, Path) of Hadoop, which knows local paths, hdfs://, s3a:// and the rest alike
    (Java objects, through Spark's py4j gateway)."""
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hpath


def read(spark: SparkSession, path: str, text_column: str) -> DataFrame:
    """The input as a DataFrame: CSV if the path ends in .csv, else Parquet. Checks the text column."""
    fs, hpath = hadoop_fs(spark, path)
    if not fs.globStatus(hpath):
        raise UserError(f"--input {path} does not exist; give a Parquet file or folder, or a .csv file.")
    is_csv = path.rstrip("/").lower().endswith(".csv")
    options = csv_options(spark, path) if is_csv else {}
    try:
        if is_csv:
            # RFC 4180 CSV, as pandas and spreadsheets write it: quoted fields may hold commas, quotes ("")
            # and newlines.
            frame = spark.read.csv(path, header=True, multiLine=True, escape='"', **options)
            check_csv_fields(spark, path, frame, options)
        else:
            frame = spark.read.parquet(path)
    except UserError:
        raise
    except Exception as error:  # Spark's AnalysisException, or a Java error from a file it cannot parse
        raise UserError(f"could not read --input {path} as {'CSV' if is_csv else 'Parquet'} ({first_line(error)}); "
                        "give Parquet, or CSV with a header line in a path ending in .csv.") from None
    columns = dict(frame.dtypes)
    if text_column not in columns:
        raise UserError(f"--input {path} has no {text_column} column "
                        f"(it has: {', '.join(frame.columns) or 'none'}); name the text column with --text-column.")
    if columns[text_column] != "string":
        raise UserError(f"the {text_column} column of {path} holds {columns[text_column]}, not text; "
                        "name the text column with --text-column.")
    return frame


def csv_options(spark: SparkSession, path: str) -> dict[str, str]:
    """Spark's encoding and separator for the CSV input `path`, found by data/reading.py from the start of its first
    file (UTF-8, UTF-16 or Windows-1252: Excel's three CSV kinds), with tables.py's line when it is not UTF-8."""
    fs, hpath = hadoop_fs(spark, path)
    files = []
    for found in fs.globStatus(hpath):
        listed = fs.listStatus(found.getPath()) if found.isDirectory() else [found]
        files += sorted((f.getPath() for f in listed
                         if f.isFile() and not f.getPath().getName().startswith(("_", "."))),
                        key=lambda p: p.toString())
    if not files:
        return {}
    stream = fs.open(files[0])
    try:
        head = bytes(stream.readNBytes(SNIFF_BYTES))
    finally:
        stream.close()
    codec, encoding = reading.encoding_of(head, path, complete=len(head) < SNIFF_BYTES)
    text = head.decode(codec, errors="ignore")
    separator = reading.separator_of(text)
    reading.say(path, encoding, f"{reading.SEPARATORS[separator]}-separated")
    blank = reading.first_blank_line(text, separator)
    if blank:
        print(f"note: {files[0].toString()} line {blank} is blank, and Spark's CSV reader skips blank lines: such a "
              "row (an empty review, in a one-column CSV) gets no output row, and the rows after it move up one; save "
              "the input as Parquet, or put a text in every row, to keep them in line", file=sys.stderr, flush=True)
    if encoding == "Windows-1252":
        # Spark 4.x reads CSV only in UTF-8, UTF-16/32, US-ASCII and ISO-8859-1 unless this legacy switch allows
        # every charset Java knows (ISO-8859-1 would turn Excel's curly quotes into control characters).
        spark.conf.set("spark.sql.legacy.javaCharsets", "true")
    return {"encoding": {"UTF-8": "UTF-8", "UTF-16": "UTF-16", "Windows-1252": "windows-1252"}[encoding],
            "sep": separator}


MALFORMED = "__malformed"  # Spark's copy of a CSV record whose number of fields is not its header's
CODECS = {"UTF-8": "utf-8-sig", "UTF-16": "utf-16", "windows-1252": "cp1252"}  # csv_options' encodings, in Python


def check_csv_fields(spark: SparkSession, path: str, frame: DataFrame, options: dict[str, str]) -> None:
    """A UserError naming the first line of the CSV input with more fields than its header (a separator in a review
    out of quotes), whose extra fields Spark's reader would drop silently. A row with fewer fields is read whole
    (empty cells), as pandas reads it. Spark marks both kinds (PERMISSIVE mode's columnNameOfCorruptRecord): the
    fields of the marked rows are counted on the executors, and only if one has too many is its file read here,
    through, to name the line (data/reading.check_fields). Costs one more read of the CSV, little next to scoring."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    schema = StructType([*frame.schema.fields, StructField(MALFORMED, StringType())])
    marked = spark.read.csv(path, header=True, multiLine=True, escape='"', schema=schema, mode="PERMISSIVE",
                            columnNameOfCorruptRecord=MALFORMED, **options)
    width, separator, malformed = len(frame.columns), options.get("sep", ","), MALFORMED

    def too_many(chunks: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import csv
        import io

        def fields(record: str) -> int:
            return len(next(csv.reader(io.StringIO(record), delimiter=separator), []))

        for chunk in chunks:
            yield chunk.loc[chunk[malformed].map(fields) > width, ["file"]]

    # Spark reads no raw CSV for its malformed-record column alone: a data column is read with it.
    bad = (marked.where(F.col(MALFORMED).isNotNull())
           .select(F.input_file_name().alias("file"), MALFORMED, frame.columns[0])
           .mapInPandas(too_many, "file string").first())
    if bad is None:
        return
    fs, file = hadoop_fs(spark, bad["file"])
    codec = CODECS[options.get("encoding", "UTF-8")]
    with io.TextIOWrapper(io.BufferedReader(HadoopStream(fs.open(file))), encoding=codec, newline="") as lines:
        reading.check_fields(bad["file"], lines, separator)
    raise UserError(f"{bad['file']} has a row with more fields than its header; quote the reviews that hold a "
                    f"{reading.SEPARATORS[separator]}, as Excel and pandas do when they save a CSV.")


class HadoopStream(io.RawIOBase):
    """A file opened through Hadoop's file system API (a Java InputStream), read from Python."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = bytes(self.stream.readNBytes(len(buffer)))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self.stream.close()
        super().close()


ROW = "__row"  # the input order, when the rows are spread over more tasks; dropped before writing


def executor_model(archive_name: str, backend: str, batch_size: int,
                   long: windows.Reading | None = None) -> backends.OnnxBackend:
    """The ONNX model on an executor, loaded once per Python worker from the archive Spark shipped; long reviews read
    as `long` says (long_reading; None: as onnx.json says)."""
    from pyspark import SparkFiles, TaskContext

    given = (long.long_reviews, long.overlap, long.max_windows) if long else (None, None, None)
    # Each task gets spark.task.cpus cores (1 by default): ONNX Runtime uses that many threads.
    return backends.onnx_once(SparkFiles.get(archive_name), backend, batch_size, TaskContext.get().cpus(), *given)


def scorer(archive_name: str, backend: str, batch_size: int, text_column: str, classes: Sequence[str],
           min_confidence: float | None = None, long: windows.Reading | None = None,
           capped: Any = None) -> Callable[[Iterable[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """mapInPandas function: each chunk of a task's rows, the same rows plus label and probabilities, in order.
    The label is "uncertain" where the top probability is below `min_confidence` (backends.labels). Long reviews
    are read as `long` says (executor_model); `capped`, a Spark accumulator, counts the reviews whose windows the
    cap (--max-windows) cut, for the driver to say.

    The backend sorts a chunk's texts by length into batches and puts the scores back in the rows' order.
    A review's scores depend only on the review (the int8 export quantizes each token on its own,
    export/quantize.py), so which rows share a task or a batch changes nothing: these are predict.py's numbers.
    """
    import numpy as np

    def score(frames: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = executor_model(archive_name, backend, batch_size, long)
        if capped is not None:  # said once, on the driver, for all the executors' reviews
            model.say = functools.partial(count_capped, capped)
        for frame in frames:
            texts = frame[text_column].fillna("").str.strip()  # as src/predict.py reads them
            has_text = (texts != "").to_numpy()
            proba = np.full((len(frame), len(classes)), np.nan)  # NaN becomes null in Spark
            if has_text.any():
                proba[has_text] = model.predict_proba(texts[has_text].tolist())
            label = np.array(backends.labels(np.nan_to_num(proba), classes, min_confidence), dtype=object)
            frame["label"] = np.where(has_text, label, None)
            for i, name in enumerate(classes):
                frame[f"prob_{name}"] = proba[:, i]
            yield frame

    return score


def count_capped(capped: Any, note: str) -> None:
    """Add the number of reviews a windows.cap_note line counts to the accumulator `capped`; a line that counts none
    is said on the executor's standard error instead."""
    found = re.search(r"\d+", note)
    if found:
        capped.add(int(found.group()))
    else:
        print(note, file=sys.stderr, flush=True)


def score(spark: SparkSession, args: argparse.Namespace) -> dict[str | None, int]:
    """Read, score and write, all or nothing. Returns {label or None: rows}."""
    check_model(args.model, args.backend)
    long = long_reading(args)
    check_output(spark, args.output, args.overwrite)
    args.text_column = args.text_column or cli.text_columns(args.model)[0]
    frame = read(spark, args.input, args.text_column)
    classes = json.loads((args.model / backends.ONNX_SETTINGS).read_text())["classes"]
    backends.check_min_confidence(args.min_confidence, classes)
    clash = [c for c in ["label", *(f"prob_{c}" for c in classes)] if c in frame.columns]
    if clash:
        raise UserError(f"--input {args.input} already has a {clash[0]} column, which the scores would replace; "
                        "rename or drop it first.")
    sc = spark.sparkContext
    partitions = args.partitions or max(4 * sc.defaultParallelism, frame.rdd.getNumPartitions())
    with tempfile.TemporaryDirectory(prefix="score-spark-") as packed:
        archive = pack_model(args.model, args.backend, packed)
        sc.addArchive(str(archive))  # unpacked on every executor, found there with SparkFiles.get
        sc.addPyFile(str(pack_code(packed)))  # the whole package: the executors import what scorer() needs from it
        print(f"scoring {args.input} in {partitions} tasks on {sc.master} with {args.backend}...", file=sys.stderr,
              flush=True)
        capped = sc.accumulator(0)  # reviews the windows' cap cut, added up from the executors
        write_atomically(spark, scored_in_input_order(frame, args, archive.name, classes, partitions, long, capped),
                         args.output)
    if capped.value:
        print(windows.cap_note(capped.value, long), file=sys.stderr, flush=True)
    counts = spark.read.parquet(args.output).groupBy("label").count().collect()
    return {r["label"]: r["count"] for r in counts}


def scored_in_input_order(frame: DataFrame, args: argparse.Namespace, archive_name: str, classes: Sequence[str],
                          partitions: int, long: windows.Reading | None = None, capped: Any = None) -> DataFrame:
    """`frame` plus label and probabilities, in `partitions` tasks, rows in input order (`long`, `capped`: scorer's).

    Each task scores its own rows: no shuffle to batch reviews of similar length across the cluster. Only when
    the input has a different number of partitions are its rows moved, in contiguous ranges that keep their order.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    moved = partitions != frame.rdd.getNumPartitions()
    if moved:
        frame = (frame.withColumn(ROW, F.monotonically_increasing_id())
                 .repartitionByRange(partitions, ROW).sortWithinPartitions(ROW))
    schema = StructType([*frame.schema.fields, StructField("label", StringType()),
                         *(StructField(f"prob_{c}", DoubleType()) for c in classes)])
    scored = frame.mapInPandas(scorer(archive_name, args.backend, args.batch_size, args.text_column, classes,
                                      args.min_confidence, long, capped),
                               schema=schema)
    return scored.drop(ROW) if moved else scored


SPARK_MARKER = "_imdb-distilbert"  # in every output this script writes (readers of Parquet skip names starting "_")


def check_output(spark: SparkSession, output: str, overwrite: bool) -> None:
    """Refuse an existing `output` unless --overwrite, and even then unless this script wrote it (its marker)."""
    fs, target = hadoop_fs(spark, output)
    if not fs.exists(target):
        return
    if not overwrite:
        raise UserError(f"--output {output} already exists; choose a new path, or add --overwrite to replace it.")
    marker = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(target, SPARK_MARKER)
    if not fs.exists(marker):
        raise UserError(f"--output {output} holds files score_spark.py did not write (it has no {SPARK_MARKER} "
                        "marker), so --overwrite does not replace it; choose a new path, or move it away.")


def write_atomically(spark: SparkSession, frame: DataFrame, output: str) -> None:
    """Write `frame` as Parquet to a hidden folder beside `output`, with the marker, then rename it to `output`.

    A failed or interrupted job leaves no `output`, and an earlier one (--overwrite) is replaced only by a complete
    new one: it is renamed aside, the new one renamed in (put back if that fails), and only then deleted. Hadoop's
    file systems have no atomic exchange of two names, so a kill between those two renames leaves the old output
    under `.NAME.old-*` beside it (the message below says so on the next run), never deleted.
    The package's own writer (files.atomic_folder) is for local folders: this one goes through Hadoop's file
    system API, so that `output` may be on hdfs://, s3a:// or any file system Spark writes to.
    """
    jvm = spark.sparkContext._jvm
    fs, target = hadoop_fs(spark, output)
    hidden = f".{target.getName()}.%s-{uuid.uuid4().hex[:8]}"
    staging, old = (jvm.org.apache.hadoop.fs.Path(target.getParent(), hidden % kind) for kind in ("partial", "old"))
    leftovers = fs.globStatus(jvm.org.apache.hadoop.fs.Path(target.getParent(), f".{target.getName()}.old-*"))
    if leftovers and not fs.exists(target):
        print(f"note: {leftovers[0].getPath()} is an earlier output of an interrupted run, kept; "
              "rename it back or delete it", file=sys.stderr)
    try:
        frame.write.parquet(staging.toString())
        marker = fs.create(jvm.org.apache.hadoop.fs.Path(staging, SPARK_MARKER))
        marker.write(bytearray(json.dumps({"written_by": "imdb-distilbert score_spark.py"}).encode()))
        marker.close()
        replacing = fs.exists(target)
        if replacing and not fs.rename(target, old):
            raise OSError(f"could not rename {target} to {old}")
        if not fs.rename(staging, target):
            if replacing:
                fs.rename(old, target)
            raise OSError(f"could not rename {staging} to {target}")
        if replacing:
            fs.delete(old, True)
    finally:
        if fs.exists(staging):
            fs.delete(staging, True)


def first_line(error: BaseException) -> str:
    """The first line of `error`'s message; for an error from Spark's JVM, of the Java exception's."""
    java = getattr(error, "java_exception", None)
    text = str(java.getMessage() if java is not None else error).strip()
    return (text.splitlines() or [type(error).__name__])[0][:300]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    check_model(args.model, args.backend)  # before Spark starts: a wrong folder is reported in a second
    long_reading(args)  # and so is a bad --window-overlap or --max-windows
    created = _no_active_session()
    started = time.time()
    spark = session(args.master)
    ready = time.time()
    try:
        local = hadoop_fs(spark, args.output)[0].getUri().getScheme() == "file"
        with files.output_lock(Path(args.output)) if local else contextlib.nullcontext():  # one run per output
            counts = score(spark, args)
        scored = time.time()
    finally:
        if created:
            spark.stop()
    empty = counts.pop(None, 0)
    summary = ", ".join(f"{label} {n}" for label, n in sorted(counts.items()))
    print(f"wrote {sum(counts.values()) + empty} rows ({summary}) to {args.output}"
          + (f"; {empty} rows had no text: their label and probabilities are null" if empty else ""))
    print(f"took {scored - started:.1f} s: {ready - started:.1f} s starting Spark, "
          f"{scored - ready:.1f} s reading, scoring and writing")


def _no_active_session() -> bool:
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return True
    return SparkSession.getActiveSession() is None

