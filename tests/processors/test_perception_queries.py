"""Perception questions and tools: matched to the cues the landmarks engine sees."""

import pytest

from processors.perception.queries import (
    answer_now,
    answer_over_call,
    parse_tools,
    tool_arguments,
    topics_of,
    trigger_state,
    unanswerable,
)

pytestmark = pytest.mark.unit


def test_questions_are_matched_to_what_the_cues_cover():
    assert topics_of("Is the user smiling?") == ["expression"]
    assert topics_of("How many people are in the room?") == ["people"]
    assert topics_of("Is the user paying attention or distracted?") == ["attention"]
    assert topics_of("Did the user nod?") == ["gesture"]
    assert topics_of("What does the shared screen say?") == ["screen"]
    assert unanswerable(["What colour is the user's shirt?", "Is it too dark?"]) == ["What colour is the user's shirt?"]


def test_answers_now_and_over_the_call():
    cues = {"faces": {"value": 1}, "attention": {"value": "away"}, "expression": {"value": "frowning"}}
    assert answer_now("Is the user looking at me?", cues) == "looking away"
    assert answer_now("Is the user upset?", cues) == "frowning"
    assert answer_now("Is the user smiling?", {"faces": {"value": 0}}) == "no one is in view"
    durations = {"attention": {"looking": 30.0, "away": 10.0}, "expression": {"neutral": 40.0}}
    assert answer_over_call("Was the user looking at the camera?", durations, [], []) == "attention: looking 75%, away 25%"
    assert answer_over_call("Did they nod?", durations, [("nodded", 1.0), ("nodded", 9.0)], []) == "gestures: nodded 2x"


def test_a_tool_fires_on_the_cue_its_words_name_with_arguments_it_asks_for():
    tool = {
        "type": "function",
        "function": {
            "name": "log_mood",
            "description": "Record the user's mood.",
            "parameters": {
                "type": "object",
                "properties": {
                    "mood": {"type": "string", "enum": ["happy", "frowning", "surprised"]},
                    "note": {"type": "string"},
                    "people": {"type": "integer"},
                },
            },
        },
    }
    (parsed,), refused = parse_tools([tool], "Call log_mood when the user frowns.")
    assert refused == [] and parsed.triggers == (("expression", "frowning"),)
    args = tool_arguments(parsed, "the user is frowning and looking at you", "frowning")
    assert args == {"mood": "frowning", "note": "the user is frowning and looking at you", "people": 1}
    _parsed, refused = parse_tools([tool], None)
    assert refused and "'log_mood' names no cue" in refused[0]
    assert trigger_state("faces", 3) == ("faces", "many") and trigger_state("faces", 0) == ("faces", 0)
