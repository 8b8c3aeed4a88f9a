"""Bytes to a table: encodings, binary and compressed files, CSV/TSV/JSON/JSONL/Parquet, datasets folders and the Hub."""

from __future__ import annotations

import codecs
import csv
import importlib.util
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from .core import DataError

# datasets and huggingface_hub are imported only for a datasets folder or a Hub id: seconds, for one kind of data.

MAX_FILE_BYTES = 200_000_000  # the same default as the app's Gradio max_file_size ("200mb")
MAX_BAD_FIELD_SHARE = 0.05  # CSV rows with the wrong number of fields: a few are dropped, more mean a bad parse
MAX_JSON_DEPTH = 8  # the Amazon metadata nests 3 deep; deeper means this is not a table of products
COMPRESSED_SUFFIXES = (".gz", ".zip", ".bz2", ".xz", ".zst", ".7z", ".tgz", ".rar")


@dataclass
class Table:
    """A file read into raw values: the frame, each row's line (or record) number, and rows refused on reading."""

    frame: pd.DataFrame
    lines: list[int]
    unit: str = "line"
    bad_lines: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # from reading (e.g. the encoding), copied into the report
    splits: list[str] | None = None  # each row's split ("train", "validation", "test") when the data has its own


FALLBACK_ENCODING = "cp1252"
CP1252_WARNING = "not UTF-8; read as Windows-1252 (cp1252) — check accented characters"


def _decode(raw: bytes, name: str, warnings: list[str] | None = None) -> str:
    """File bytes as text: UTF-8 (BOM or not), UTF-16 when its BOM says so, else cp1252 with a warning appended."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise DataError(f"{name}: invalid UTF-16 at byte {exc.start}; re-save the file as UTF-8") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as utf8:
        # The declared fallback: Windows-1252, what Excel on Windows writes as plain "CSV". It decodes every byte
        # but five, so a file that fails it too is no text we can guess at.
        try:
            text = raw.decode(FALLBACK_ENCODING)
        except UnicodeDecodeError as exc:
            raise DataError(f"{name}: neither UTF-8 (invalid byte 0x{raw[utf8.start]:02x} at byte {utf8.start}) "
                            f"nor Windows-1252 (invalid byte 0x{raw[exc.start]:02x} at byte {exc.start}); "
                            f"re-save the file as UTF-8 (in Excel: 'CSV UTF-8')") from None
        if warnings is not None:
            warnings.append(CP1252_WARNING)
    if "\x00" in text:
        raise DataError(f"{name}: looks like a binary file, not text (or UTF-16 without a byte-order mark); "
                        f"upload {FORMATS} saved as UTF-8")
    return text


_COMPRESSED_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd",
                     b"7z\xbc\xaf\x27\x1c": "7-Zip", b"Rar!": "RAR"}


def _check_not_binary(raw: bytes, name: str) -> None:
    for magic, kind in _COMPRESSED_MAGIC.items():
        if raw.startswith(magic):
            raise DataError(f"{name}: is {kind}-compressed; decompress it first and upload the {FORMATS} file inside")
    if raw.startswith(b"PK\x03\x04") or raw.startswith(b"\xd0\xcf\x11\xe0"):
        if b"xl/" in raw[:4096] or b"[Content_Types]" in raw[:4096] or raw.startswith(b"\xd0\xcf"):
            raise DataError(f"{name}: is an Excel workbook, not a text file; "
                            f"in Excel, export it as CSV (File → Save As → CSV UTF-8)")
        raise DataError(f"{name}: is a zip archive; decompress it first and upload the {FORMATS} file inside "
                        f"(a spreadsheet renamed .csv is also a zip: export it as CSV)")
    if raw.startswith(b"PAR1"):
        raise DataError(f"{name}: is a Parquet file; give it the .parquet extension")


def _sniff_delimiter(text: str) -> str:
    header = next((line for line in text.splitlines() if line.strip()), "")
    sample = "\n".join(text.splitlines()[:20])
    try:
        sep = csv.Sniffer().sniff(sample, delimiters=",;\t").delimiter
    except csv.Error:
        sep = ""
    # The sniffer can be fooled by punctuation inside the text; the header names are a safer witness.
    if not sep or sep not in header:
        sep = max(",;\t", key=header.count)
    return sep


def _csv_records(text: str, name: str, sep: str) -> list[tuple[int, list[str]]]:
    """(first file line, fields) of each non-blank record; a quote left open to the end of the file is refused."""
    def read(strict: bool):
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=strict)
        records, previous = [], 0
        try:
            for record in reader:
                if record and not (len(record) == 1 and not record[0].strip()):  # blank lines are skipped
                    records.append((previous + 1, record))
                previous = reader.line_num
        except csv.Error as exc:
            if "field larger than field limit" in str(exc):
                raise DataError(f"{name}: a field starting on line {previous + 1} is over "
                                f"{csv.field_size_limit():,} characters; is a quote left open?") from None
            # A quote never closed runs to the end of the file, or on to the next quote, several lines on.
            if strict and ("unexpected end of data" in str(exc) or reader.line_num > previous + 1):
                raise DataError(f"{name}: the quote opened on line {previous + 1} is never closed "
                                f"(the lines after it would become one field); close or remove it") from None
            if strict:  # a stray quote inside a field ("12"x): read it leniently, as pandas would
                return None
            raise DataError(f"{name}: cannot read line {previous + 1} as CSV ({exc})") from None
        return records
    return read(True) or read(False) or []


def _read_csv(text: str, name: str, sep: str) -> Table:
    records = _csv_records(text, name, sep)
    if not records:
        raise DataError(f"{name}: the file is empty")
    (_, header), body = records[0], records[1:]
    good = [(line, fields) for line, fields in body if len(fields) == len(header)]
    bad = [line for line, fields in body if len(fields) != len(header)]
    if bad and len(bad) > MAX_BAD_FIELD_SHARE * len(body):
        shown = {",": "comma", ";": "semicolon", "\t": "tab"}[sep]
        raise DataError(f"{name}: {len(bad)} of {len(body)} rows do not have the header's {len(header)} "
                        f"{shown}-separated fields (first on line {bad[0]}); check the delimiter and that text "
                        f"containing it is in double quotes")
    frame = pd.DataFrame([fields for _, fields in good], columns=header, dtype=object)
    return Table(frame, [line for line, _ in good], "line", bad)


def _depth(value, limit: int) -> int:
    """Nesting depth of a JSON value, counted only up to limit + 1 (enough to refuse it)."""
    if limit < 0 or not isinstance(value, (dict, list)):
        return 0
    items = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(item, limit - 1) for item in items), default=0)


def _json_value(text: str, name: str, where: str):
    try:
        return json.loads(text)
    except RecursionError:
        raise DataError(f"{name}: {where}JSON nested too deeply to be a table of products; flatten it") from None


def _check_depth(record, name: str, where: str) -> None:
    if _depth(record, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise DataError(f"{name}: {where}is nested more than {MAX_JSON_DEPTH} levels deep; "
                        f"expected flat records like {{\"text\": ..., \"price\": ...}}")


def _read_jsonl(text: str, name: str) -> Table:
    records, lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = _json_value(line, name, f"line {number}: ")
        except json.JSONDecodeError as exc:
            raise DataError(f"{name}: line {number} is not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{name}: line {number} is a JSON {type(record).__name__}, "
                            f"not an object like {{\"text\": ..., \"price\": ...}}")
        _check_depth(record, name, f"line {number} ")
        records.append(record)
        lines.append(number)
    return Table(pd.DataFrame.from_records(records), lines, "line")


def _read_json(text: str, name: str) -> Table:
    try:
        data = _json_value(text, name, "")
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # one object per line in a file named .json
            return _read_jsonl(text, name)
        raise DataError(f"{name}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if isinstance(data, dict):
        raise DataError(f"{name}: holds one JSON object; expected an array of objects "
                        f"like [{{\"text\": ..., \"price\": ...}}, ...]")
    if not isinstance(data, list):
        raise DataError(f"{name}: expected a JSON array of objects, found a {type(data).__name__}")
    for number, record in enumerate(data, start=1):
        if not isinstance(record, dict):
            raise DataError(f"{name}: item {number} of the array is a {type(record).__name__}, not an object")
        _check_depth(record, name, f"item {number} of the array ")
    return Table(pd.DataFrame.from_records(data), list(range(1, len(data) + 1)), "record")


def _read_parquet(path: Path) -> pd.DataFrame:
    if importlib.util.find_spec("pyarrow") is None:
        raise DataError(f"{path.name}: reading Parquet needs the pyarrow package; install it "
                        f"(`pip install pyarrow`) or upload CSV or JSONL instead")
    try:
        return pd.read_parquet(path, engine="pyarrow")
    except Exception as exc:  # pyarrow raises many types; any of them means the same to the user
        raise DataError(f"{path.name}: cannot read it as Parquet ({exc})") from None


def _check_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in COMPRESSED_SUFFIXES:
        raise DataError(f"{path.name}: is a compressed file; decompress it first and upload the {FORMATS} inside")
    if suffix in SPREADSHEET_SUFFIXES:
        raise DataError(f"{path.name}: spreadsheets are not read directly; export it as CSV")
    if suffix not in FILE_FORMATS:
        raise DataError(f"{path.name}: unsupported file type '{suffix}'; upload {FORMATS}")
    return suffix


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:  # checked before reading, so a huge file never lands in memory
            raise DataError(f"{path.name}: is {size / 1e6:,.1f} MB, over the {max_bytes / 1e6:,.0f} MB limit; "
                            f"upload a sample of the data")
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path.name}: cannot open it ({exc.strerror})") from None


def _read_frame(path: Path, max_bytes: int = MAX_FILE_BYTES) -> Table:
    """The file as a table of raw values with the line (or record) number of each row."""
    suffix = _check_suffix(path)
    raw = _read_bytes(path, max_bytes)
    if not raw.strip():
        raise DataError(f"{path.name}: the file is empty")
    form = FILE_FORMATS[suffix]
    if form.binary:
        return form.read(path, path.name)
    _check_not_binary(raw, path.name)
    warnings: list[str] = []
    text = _decode(raw, path.name, warnings)
    if not text.strip():
        raise DataError(f"{path.name}: the file is empty")
    table = form.read(text, path.name)
    table.warnings[:0] = warnings
    return table


@dataclass(frozen=True)
class FileFormat:
    """One accepted file type: how a table is read from it and how a priced table is written in it."""

    name: str
    read: Callable[[str | Path, str], Table]
    """(the decoded text, or for a binary format the path; the file's name for messages) → the table."""
    write: Callable[[pd.DataFrame, Path], None] | None = None
    """How `trainer price` and the Predict tab write a priced catalog in this format; None: not written."""
    binary: bool = False
    offered: bool = True
    """Named in the upload pickers and messages; the others are read when given (a .txt CSV, .ndjson)."""


def _parquet_table(path: Path, name: str) -> Table:
    frame = _read_parquet(path)
    return Table(frame, list(range(1, len(frame) + 1)), "record")


FILE_FORMATS: dict[str, FileFormat] = {
    ".csv": FileFormat("CSV", lambda text, name: _read_csv(text, name, _sniff_delimiter(text)),
                       lambda frame, out: frame.to_csv(out, index=False)),
    ".tsv": FileFormat("TSV", lambda text, name: _read_csv(text, name, "\t"),
                       lambda frame, out: frame.to_csv(out, index=False, sep="\t")),
    ".txt": FileFormat("text", lambda text, name: _read_csv(text, name, _sniff_delimiter(text)), offered=False),
    ".json": FileFormat("JSON", _read_json,
                        lambda frame, out: frame.to_json(out, orient="records", force_ascii=False)),
    ".jsonl": FileFormat("JSONL", _read_jsonl,
                         lambda frame, out: frame.to_json(out, orient="records", lines=True, force_ascii=False)),
    ".ndjson": FileFormat("NDJSON", _read_jsonl, offered=False),
    ".parquet": FileFormat("Parquet", _parquet_table, lambda frame, out: frame.to_parquet(out, index=False),
                           binary=True),
}
"""Every data file type by suffix: the one table the readers, the upload pickers and the catalog writer read."""
UPLOAD_SUFFIXES = [suffix for suffix, form in FILE_FORMATS.items() if form.offered]
OUTPUT_SUFFIXES = [suffix for suffix, form in FILE_FORMATS.items() if form.write]
_OFFERED = [form.name for form in FILE_FORMATS.values() if form.offered]
FORMATS = f"{', '.join(_OFFERED[:-1])} or {_OFFERED[-1]}"
"""The offered formats as a message names them: "CSV, TSV, JSON, JSONL or Parquet"."""
SPREADSHEET_SUFFIXES = (".xlsx", ".xls", ".ods")


# ---------------------------------------------------------------------------
# Hugging Face datasets: a local folder (save_to_disk, or a folder of data files) or a Hub id like "owner/name"

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_hub_id(source) -> bool:
    """True for "owner/name" that is no local path and not a data file's name."""
    text = str(source)
    return (bool(_HUB_ID.fullmatch(text)) and not Path(text).exists()
            and not text.lower().endswith((*FILE_FORMATS, *SPREADSHEET_SUFFIXES, *COMPRESSED_SUFFIXES)))


def _datasets(name: str):
    try:
        import datasets
    except ImportError:
        raise DataError(f"{name}: reading a Hugging Face dataset needs the datasets package; "
                        f"install it (`pip install 'datasets>=3'`) or upload a {FORMATS} file") from None
    return datasets


SPLIT_NAMES = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
               "val": "validation", "dev": "validation", "test": "test", "testing": "test"}
"""A dataset's split names as a run's parts; a split named otherwise is trained on."""


def _dataset_table(data, name: str, max_rows: int) -> Table:
    """A Dataset as it is, or every split of a DatasetDict, each row tagged with its split."""
    parts = dict(data) if isinstance(data, dict) else {"": data}  # DatasetDict is a dict of split name → Dataset
    if not parts:
        raise DataError(f"{name}: the dataset has no splits")
    rows = sum(part.num_rows for part in parts.values())
    if rows > max_rows:  # before converting, so a huge dataset never becomes a DataFrame
        raise DataError(f"{name}: has {rows:,} rows, more than the limit of {max_rows:,}; upload a sample of the data")
    frames = [part.to_pandas() for part in parts.values()]
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    splits = None
    if len(parts) > 1:
        splits = [SPLIT_NAMES.get(split.lower(), "train") for split, f in zip(parts, frames) for _ in range(len(f))]
    return Table(frame, list(range(1, len(frame) + 1)), "record", splits=splits)


def _read_dataset_folder(path: Path, max_rows: int) -> Table:
    """A folder written by Dataset(Dict).save_to_disk, or a folder of data files, through `datasets`."""
    datasets = _datasets(path.name)
    try:
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            data = datasets.load_from_disk(str(path))
        else:
            data = datasets.load_dataset(str(path))
    except DataError:
        raise
    except Exception as exc:  # datasets raises many types (FileNotFoundError, ValueError, DatasetGenerationError…)
        raise DataError(f"{path.name}: cannot read the folder as a Hugging Face dataset "
                        f"({' '.join(str(exc).split()) or type(exc).__name__})") from None
    return _dataset_table(data, path.name, max_rows)


def _hub_offline() -> bool:
    try:
        from huggingface_hub import constants
        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return False


def _read_hub_dataset(dataset_id: str, max_rows: int) -> Table:
    datasets = _datasets(dataset_id)
    try:
        data = datasets.load_dataset(dataset_id)
    except Exception as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, (ConnectionError, TimeoutError)) or _hub_offline() or "offline" in detail.lower():
            raise DataError(f"{dataset_id}: cannot reach the Hugging Face Hub to load dataset {dataset_id}: "
                            f"{detail}") from None
        raise DataError(f"{dataset_id}: cannot load dataset {dataset_id} from the Hugging Face Hub: "
                        f"{detail}") from None
    return _dataset_table(data, dataset_id, max_rows)


def read_source(source, max_bytes: int, max_rows: int) -> tuple[Table, str]:
    """(table, name for messages) of a file, a dataset folder, or a Hub dataset id."""
    path = Path(source)
    if path.is_dir():
        return _read_dataset_folder(path, max_rows), path.name
    if is_hub_id(source):
        return _read_hub_dataset(str(source), max_rows), str(source)
    return _read_frame(path, max_bytes), path.name




def read_columns(path, max_bytes: int = MAX_FILE_BYTES) -> list[str]:
    """The column names of a file, for the mapping step when the detected columns did not work; [] if unreadable."""
    try:
        return [str(c) for c in read_source(path, max_bytes, 10**12)[0].frame.columns]
    except DataError:
        return []
