"""The training summary: fitted to the terminal, never a cut number."""

import io
import re

import pytest
from rich.console import Console

from skdsl.train.metrics import summary_table

HISTORY = [dict(epoch=epoch, train_loss=2.3456, train_top1=0.12345, val_loss=2.1,
                val_top1=0.5 + epoch / 100, val_top5=0.9, lr=0.1, seconds=12.3)
           for epoch in (1, 2)]


def shown(width: int) -> str:
    out = io.StringIO()
    Console(file=out, width=width).print(summary_table(HISTORY, 2), crop=False)
    return out.getvalue()


@pytest.mark.parametrize("width", [1, 12, 20, 50, 160])
def test_validation_top1_is_shown_whole_at_any_width(width):
    text = shown(width)
    assert "51.00%" in text and "52.00%" in text and "2 *" in text
    assert not re.search(r"\d…|…\d", text)


def test_a_narrow_summary_says_which_columns_it_left_out():
    assert "left out at this width: time, lr, train loss" in shown(50)
    assert "left out" not in shown(160) and "2.3456" in shown(160)
