"""Bad uploads through the launched app's HTTP API: each gets a clear message, and the app keeps answering."""

import gzip
import json

import pytest
from gradio_client import Client, handle_file

pytestmark = pytest.mark.e2e

GOOD = "".join(f"Steel bolt size {i},{i + 0.5}\n" for i in range(1, 30))
BAD = [  # (file name, content, words the message must hold)
    ("empty.csv", b"", "the file is empty"),
    ("header.csv", b"text,price\n", "has no data rows"),
    ("renamed.csv", b"PK\x03\x04" + bytes(range(256)) * 4, "decompress it first"),
    ("packed.csv", gzip.compress(b"text,price\na,1\n"), "gzip-compressed; decompress it first"),
    ("unclosed.csv", ("text,price\n" + GOOD + '"Open quote,5\nx,1\n').encode(), "is never closed"),
    ("ragged.csv", b"text,price\na,1,2\nb,2,3\nc,3\n", "do not have the header's 2"),
    ("deep.json", ("[" * 50_000 + "]" * 50_000).encode(), "nested too deeply"),
    ("broken.jsonl", b'{"text": "a", "price": 1}\n{"text": oops}\n', "line 2 is not valid JSON"),
    ("cost.csv", ("name,cost\n" + GOOD).encode(), "the columns are: 'name', 'cost'"),
    ("../../etc/passwd.csv", b"\xff\xfe\x00", "Cannot use this file"),
]


def test_bad_uploads_get_clear_messages_and_the_app_keeps_answering(launched_app, tmp_path):
    client = Client(launched_app.url, verbose=False)
    for name, content, words in BAD:
        path = tmp_path / name.replace("/", "_")  # the name Gradio sees; it never becomes a server path
        path.write_bytes(content)
        info, preview, _hist, _tokens = client.predict(handle_file(str(path)), api_name="/upload")
        assert info.startswith("**Cannot use this file:**") and words in info, (name, info)
    # Multi-column detection: no text column, so title + description are joined; the app still answers.
    good = tmp_path / "two.jsonl"
    good.write_text("".join(json.dumps({"title": f"Bolt {i}", "description": f"steel, size {i}", "price": i + 0.5})
                            + "\n" for i in range(1, 30)))
    info, preview, _hist, _tokens = client.predict(handle_file(str(good)), api_name="/upload")
    assert "29 of 29 rows kept" in info and "`title + description`" in info
    assert client.predict(api_name="/refresh")[0]


def test_a_big_upload_is_counted_whole_and_charted_from_a_sample(launched_app, tmp_path):
    # The probe's 50 MB CSV, scaled to 60,000 rows (~16 MB) to keep the suite short: every row is read and counted;
    # only the token-length chart is drawn from a sample (tokenizing every row was most of the probe's 210 s).
    from trainer.data import make_sample_products
    from ui.data_box import CHART_ROWS

    big = tmp_path / "big.csv"
    rows = make_sample_products(60_000, seed=3)
    big.write_text("text,price\n" + "".join(f'"{p.text}",{p.price}\n' for p in rows))
    client = Client(launched_app.url, verbose=False)
    info, _preview, _prices, tokens = client.predict(handle_file(str(big)), api_name="/upload")
    assert "60,000 of 60,000 rows kept" in info, info
    assert f"of {CHART_ROWS:,}" in tokens["plot"] and "sampled from 60,000 rows" in tokens["plot"], tokens["plot"][:500]
