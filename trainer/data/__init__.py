"""Product-price data, one module per concern; `from trainer.data import …` reaches every public name.

core     Product, DataError, PriceError
prompt   the course prompt, the price completion, tokenization, example lengths and the max-length cut-off
prices   price parsing (currency, separators, decimal commas)
text     cleaning, unwrapping text already in the course prompt
readers  bytes → table: encodings, binary sniffing, CSV/TSV/JSON/JSONL/Parquet, datasets folders, the Hub
load     table → products: columns, row cleaning, duplicates, the report; the seeded split
sample   the seeded synthetic sample generator
"""

from .core import DataError, PriceError, Product
from .load import (COMBINED_TEXT_COLUMNS, PRICE_COLUMNS, TEXT_COLUMNS, DataReport, Rows, load_products, read_rows,
                   split_description,
                   split_products, split_run, as_size)
from .prices import looks_decimal_comma, parse_price
from .prompt import (COURSE_2024_QUESTION, COURSE_QUESTION, IGNORE_INDEX, PRICE_PREFIX, PROMPT_TAIL, QUESTIONS,
                     build_prompt, completion, encode_completion, encode_prompt, example_lengths, fit_max_length,
                     prompt_head, prompt_pieces, tokenize_example)
from .readers import (CP1252_WARNING, FALLBACK_ENCODING, FILE_FORMATS, FORMATS, MAX_FILE_BYTES, OUTPUT_SUFFIXES,
                      UPLOAD_SUFFIXES, Table, is_hub_id, read_columns, read_source)
from .sample import make_sample_products
from .text import clean_text, strip_course_prompt, unwrap_course_prompt

__all__ = [
    "COMBINED_TEXT_COLUMNS", "Rows", "read_rows", "COURSE_2024_QUESTION", "COURSE_QUESTION", "QUESTIONS", "prompt_head",
    "unwrap_course_prompt", "CP1252_WARNING", "DataError", "DataReport", "FALLBACK_ENCODING",
    "FILE_FORMATS", "FORMATS", "OUTPUT_SUFFIXES", "UPLOAD_SUFFIXES", "IGNORE_INDEX", "MAX_FILE_BYTES", "PRICE_COLUMNS", "PRICE_PREFIX", "PROMPT_TAIL",
    "PriceError", "Product", "TEXT_COLUMNS", "Table", "build_prompt", "clean_text", "completion", "encode_completion",
    "encode_prompt", "example_lengths", "fit_max_length", "is_hub_id", "load_products", "looks_decimal_comma",
    "make_sample_products", "parse_price", "prompt_pieces", "read_columns", "read_source", "split_products", "split_run", "as_size",
    "split_description", "strip_course_prompt", "tokenize_example",
]
