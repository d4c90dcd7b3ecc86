import pytest

from tokens.answer import Errors, check_structure, sentences, walk_groups


def _digits(item):
    # A toy token grammar: <d> with d a digit; 9 is out of range.
    if len(item) == 3 and item[0] == "<" and item[1].isdigit() and item[2] == ">":
        return (True, int(item[1])) if item[1] != "9" else (False, f"{item} is out of range")
    return None


def test_structure():
    assert check_structure("<think>a</think><answer>b</answer>")
    assert check_structure("  <think>\na\n</think>\n<answer>\n</answer>\n")
    assert not check_structure("<answer>b</answer>")
    assert not check_structure("<think>a</think>x<answer>b</answer>")
    assert not check_structure("<think>a</think><answer>b</answer>tail")
    assert not check_structure("<think>a</think>b</think><answer>c</answer>")
    assert not check_structure("<think>a</think><answer>b</answer><answer>c</answer>")
    assert check_structure("<answer>b</answer>", require_think=False)
    assert check_structure("<think>t</think><answer>b</answer>", require_think=False)
    assert not check_structure("<answer>b</answer><think>t</think>", require_think=False)


def test_sentences():
    text = "<think>The red one. The red one.\nLeft</think><answer><box><grid_1_1></box></answer>"
    assert sentences(text) == ["The red one", "The red one", "Left"]
    assert sentences("<a><b>") == []


def test_errors_are_capped():
    e = Errors()
    for k in range(100):
        e.add(str(k))
    assert len(e) == 64 and e.summary()[-1] == "... and 36 more errors"


def test_walk_groups_reads_runs_in_order():
    e = Errors()
    walk = walk_groups("<box><1><2></box> <seg><3></seg>", _digits, e)
    assert walk.ok and walk.wrapped and list(e) == []
    assert [(r.name, r.values, r.closed, r.rejected) for r in walk.runs] == [
        ("box", [1, 2], True, False), ("seg", [3], True, False)]


@pytest.mark.parametrize("line, message", [
    ("<box><1><seg><2></seg>", "<box> is not closed before <seg>"),
    ("<seg><1></seg><seg><2></seg>", "more than one <seg>"),
    ("</box><seg><1></seg>", "</box> without its opening tag"),
    ("<1><seg><2></seg>", "<1> outside <box>/<seg>"),
    ("<seg><2>x</seg>", "unexpected 'x'"),
    ("<seg><9><2></seg>", "<9> is out of range"),
    ("<seg><2>", "<seg> is not closed at the end of the line"),
])
def test_walk_groups_records_each_problem(line, message):
    e = Errors()
    walk = walk_groups(line, _digits, e)
    assert not walk.ok and any(message in m for m in e), list(e)


def test_walk_groups_first_run_open_or_closed():
    # <box> ended by the next opening tag: the first run when any run counts, not when only a
    # run its own tag closed does (the stage-1 and the offset parser read these two).
    walk = walk_groups("<box><1><box><2></box>", _digits, Errors())
    assert walk.first("box").values == [1] and not walk.first("box").closed
    assert walk.first("box", closed=True).values == [2]
    assert walk.first("seg") is None
    rejected = walk_groups("<box><9><2></box>", _digits, Errors())
    assert rejected.first("box").rejected and rejected.first("box").values == [2]


@pytest.mark.parametrize("line, ok, wrapped", [
    ("<w><box><1></box></w>", True, True),
    ("<box><1></box>", False, False),                 # groups outside the wrapper
    ("<w><box><1></box>", True, False),               # the wrapper never closed
    ("<w><w><box><1></box></w>", False, True),        # opened twice
    ("<w><box><1></w></box>", False, True),           # closed around an open group
    ("<w><box><1></box></w><seg><2></seg>", False, True),
])
def test_walk_groups_wrapper(line, ok, wrapped):
    walk = walk_groups(line, _digits, Errors(), wrapper="w")
    assert (walk.ok, walk.wrapped) == (ok, wrapped)
