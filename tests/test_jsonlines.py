from slipstream.jsonlines import json_lines


def test_json_lines_skips_what_does_not_parse():
    lines = ['{"event": "tick"}\n', "a library printing to stdout\n", '{"event": "result", "n": 2}', '{"id": "cut sh']
    assert list(json_lines(lines)) == [{"event": "tick"}, {"event": "result", "n": 2}]
