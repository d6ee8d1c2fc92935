"""Hypothesis strategies shared by the core's differential tests."""

from __future__ import annotations

from hypothesis import strategies as st

_SPACE = st.sampled_from(["", " ", "\t", "\u3000", "\x1c", "\xa0", "\u2028"])
_DIGITS = st.sampled_from([*"0123456789", "٣", "０", "²", "_", "𝟡"])


@st.composite
def numeric_strings(draw: st.DrawFn) -> str:
    sign = draw(st.sampled_from(["", "-", "+"]))
    whole = "".join(draw(st.lists(_DIGITS, max_size=22)))
    fraction = "".join(draw(st.lists(_DIGITS, max_size=20)))
    exponent = draw(
        st.sampled_from(
            ["", "e5", "E-3", "e+17", "e-1999999999999999997", "e999999999999999999", "e"]
        )
    )
    point = draw(st.sampled_from([".", ""])) if fraction else draw(st.sampled_from(["", "."]))
    text = f"{sign}{whole}{point}{fraction}{exponent}"
    return draw(_SPACE) + text + draw(_SPACE)
