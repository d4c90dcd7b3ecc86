from tokens.answer import Errors, check_structure, sentences


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
