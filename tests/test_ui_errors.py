"""A handler's failure reaches the page as the message next to its button, never a bare "Error"."""


def test_any_exception_in_a_handler_reaches_the_page_as_its_message():
    from ui.common import reports_errors

    @reports_errors(3, at=1)
    def handler(value):
        return {}[value]  # a bug, not a refusal: KeyError

    skipped, message, also_skipped = handler("missing")
    assert message == "**Something went wrong:** KeyError: 'missing'"
    assert skipped == also_skipped and skipped.get("__type__") == "update"  # the other outputs stay as they are
    assert reports_errors()(lambda: 1 / 0)() == "**Something went wrong:** ZeroDivisionError: division by zero"
