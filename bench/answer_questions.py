"""Questions for the answer-quality bench, per shipped embedded persona, and how each reply is judged.

Each question says what kind it is (a common fact, a fact from the persona's
own context, small talk, an off-topic request, a goodbye, an upset user, a
detail the replica cannot know), which words a good reply contains (``need``:
every group must match, each group a regular expression of alternatives), and
which claims it must not make (``forbid``). ``held_out`` questions are kept
aside: prompt setups are tuned on the others only, and the held-out score is
what the default is judged by.

Checks are on the words and are deliberately loose: they catch a missing or a
wrong fact, not style.
"""

from __future__ import annotations

from dataclasses import dataclass, field

KINDS = ("fact", "context", "small_talk", "off_topic", "goodbye", "upset", "unknown")

# Code in a spoken reply: an off-topic coding request answered in kind.
CODE = r"\bdef \w+\(|```|\bimport \w|\breturn \w|\bprint\(|\w+\.sort\(|\bsorted\("
# A made-up clock time or temperature, where the replica cannot know one.
CLOCK_TIME = r"\b\d{1,2}(:\d\d)?\s*(am|pm|a\.m\.|p\.m\.|o'clock|h\b)"
TEMPERATURE = r"\b\d{1,2}\s*(°|degrees)"


@dataclass(frozen=True)
class Question:
    """One user turn and what a good reply to it contains and avoids."""

    id: str
    text: str
    kind: str
    need: tuple[str, ...] = ()
    forbid: tuple[str, ...] = ()
    held_out: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"question {self.id}: kind {self.kind!r} is not one of {KINDS}")


@dataclass(frozen=True)
class QuestionSet:
    persona: str
    questions: tuple[Question, ...] = field(default_factory=tuple)
    # Words that show a reply stayed on the persona's topic (off-topic requests should steer back).
    topic: str = ""


def q(id: str, text: str, kind: str, need=(), forbid=(), held_out: bool = False) -> Question:
    need = (need,) if isinstance(need, str) else tuple(need)
    forbid = (forbid,) if isinstance(forbid, str) else tuple(forbid)
    return Question(id=id, text=text, kind=kind, need=need, forbid=forbid, held_out=held_out)


LISBON = (
    r"lisbon|nata|custard|sardine|alfama|bel[eé]m|tram|castle|miradouro|viewpoint|fado|sintra|"
    r"tagus|bacalhau|seafood|bairro|chiado|baixa|tower|monastery|portug"
)

AVA = QuestionSet(
    persona="ava",
    topic=LISBON + r"|trip|travel|visit|city|guide|stay",
    questions=(
        # Common facts about Lisbon.
        q("a01", "What language do people speak in Lisbon?", "fact", r"portuguese"),
        q("a02", "Do people speak English here?", "fact", r"english"),
        q("a03", "What currency do they use in Portugal?", "fact", r"euro"),
        q("a04", "What river runs through Lisbon?", "fact", r"tagus|tejo"),
        q("a05", "Is Lisbon the capital of Portugal?", "fact", r"\byes\b|capital", r"\bno,|\bnot the capital", held_out=True),
        q("a06", "What's the weather like in the summer?", "fact", r"hot|warm|sunny|dry|sun", r"\bsnow|\bcold\b"),
        q("a07", "What is the weather like in March?", "fact", r"mild|cool|spring|rain|pleasant|warm|fresh",
          r"\b(2[5-9]|3\d)\s*(°|degrees)"),
        q("a08", "How do I get from the airport to the city centre?", "fact",
          r"metro|taxi|bus|uber|aerobus|train|subway|bolt", held_out=True),
        q("a09", "What time do restaurants open for dinner?", "fact",
          r"\b(7|8|seven|eight|7:30|evening|late|night)\b", r"\b(10|ten)\s*(am|a\.m\.)|\b2\s*(pm|p\.m\.)"),
        q("a10", "Is it safe to walk around at night?", "fact", r"safe|careful|generally|aware"),
        q("a11", "Do I need to tip in restaurants?", "fact",
          r"not (required|obligatory|expected|mandatory|necessary)|optional|small|round|\b5|\b10|five|ten|appreciated|up to you",
          r"\b(15|20|twenty|fifteen)\s*(%|percent)", held_out=True),
        q("a12", "What is Lisbon famous for?", "fact", LISBON),
        # Facts from the persona's own context.
        q("a13", "What should I eat while I'm here?", "context", r"nata|sardine|bacalhau|custard|seafood|pastel"),
        q("a14", "Where can I get the best custard tarts?", "context", r"bel[eé]m"),
        q("a15", "Where should I go for grilled sardines?", "context", r"alfama", held_out=True),
        q("a16", "How do I get up to the castle?", "context", r"28|tram"),
        q("a17", "Where can I watch the sunset?", "context", r"miradouro|viewpoint"),
        q("a18", "Where can I hear fado?", "context",
          r"alfama|bairro alto|mouraria|fado house|casa|tavern|restaurant|club", held_out=True),
        q("a19", "Is there a good day trip from Lisbon?", "context",
          r"sintra|cascais|[eé]vora|[oó]bidos|set[uú]bal|arr[aá]bida|nazar[eé]", r"airport|\bthe park\b"),
        q("a20", "What music is Lisbon known for?", "context", r"fado"),
        q("a21", "What should I not miss?", "context", LISBON),
        q("a22", "Which neighbourhood has the most character?", "context",
          r"alfama|bairro alto|mouraria|gra[cç]a|chiado|bel[eé]m", held_out=True),
        q("a23", "What is tram 28?", "context", r"tram|historic|castle|alfama|route|yellow|old"),
        q("a24", "How far away is Sintra?", "context", r"train|hour|minutes|\b40\b|km|kilomet|rossio|short|close|near",
          held_out=True),
        # Small talk.
        q("a25", "Hi there!", "small_talk"),
        q("a26", "How are you today?", "small_talk"),
        q("a27", "What's your name?", "small_talk", r"\bava\b"),
        q("a28", "Thanks, that's really helpful.", "small_talk", held_out=True),
        q("a29", "I'm here with my kids. Any ideas?", "small_talk",
          r"oceanarium|aquarium|zoo|tram|castle|park|bel[eé]m|tower|beach|museum|garden|pastel|nata|ice cream"),
        q("a30", "Is this your first time talking to a tourist?", "small_talk"),
        # Off-topic requests: a short answer or a way back, never code.
        q("a31", "Can you write me a Python function to sort a list?", "off_topic", (), CODE),
        q("a32", "What's the capital of France?", "off_topic", r"paris"),
        q("a33", "Can you help me with my tax return?", "off_topic",
          r"lisbon|travel|trip|guide|can't|cannot|not able|unable|sorry|afraid|accountant|expert|professional",
          held_out=True),
        q("a34", "Tell me a joke.", "off_topic"),
        # Goodbyes.
        q("a35", "Goodbye, thanks for everything!", "goodbye",
          r"bye|goodbye|enjoy|trip|stay|safe|travels|welcome|pleasure|care"),
        q("a36", "I have to go now, bye.", "goodbye", r"bye|goodbye|enjoy|trip|stay|safe|travels|care|see you",
          held_out=True),
        # An upset user.
        q("a37", "I'm feeling really stressed about this trip.", "upset",
          r"sorry|understand|don't worry|relax|help|easy|take it|breathe|plan|normal|okay|ok\b|slow",
          r"glad (that )?you('| a)re (feeling )?stress"),
        q("a38", "I lost my wallet, what do I do?", "upset",
          r"police|psp|embassy|bank|card|report|consulate|lost and found|station", held_out=True),
        q("a39", "This city is too hilly and I'm exhausted.", "upset",
          r"tram|rest|funicular|elevator|elevador|taxi|uber|bolt|break|caf[eé]|sit|bus|metro|tuk"),
        q("a40", "The restaurant overcharged me and I'm really angry.", "upset",
          r"sorry|receipt|bill|complain|ask|manager|understand|frustrat|check"),
        # Details the replica cannot know: it says so instead of making them up.
        q("a41", "What time does the bakery in Belem open tomorrow?", "unknown", (), CLOCK_TIME),
        q("a42", "What will the weather be like next Tuesday?", "unknown",
          r"not sure|don't know|do not know|can't|cannot|forecast|check|predict", TEMPERATURE, held_out=True),
        q("a43", "How many people are in the queue at the castle right now?", "unknown",
          r"not sure|don't know|do not know|can't|cannot|check|no way|depends|busy|early|vary|varies", r"\b\d+\s*people"),
        q("a44", "Is the museum near my hotel open today?", "unknown",
          r"not sure|don't know|do not know|can't|cannot|check|which|website|call|hotel|depends", CLOCK_TIME,
          held_out=True),
    ),
)

MATHS = (
    r"math|number|fraction|algebra|problem|practi|equation|add|subtract|multipl|divid|sum|solve|let's|\?|"
    r"\d|times|equal|root|square|plus|minus|half|third|quarter|zero|one|two|three|four|five|six|seven|"
    r"eight|nine|ten|\bx\b"
)

MAX = QuestionSet(
    persona="max",
    topic=MATHS,
    questions=(
        # Common facts (a tutor may hint instead of answering, but never gets it wrong).
        q("m01", "What is seven times eight?", "fact", r"56|fifty-six|fifty six|seven|eight|times|multipl|group|add",
          r"\b(54|58|48|64|63|fifty-four|fifty-eight|forty-eight|sixty-four|sixty-three)\b"),
        q("m02", "What's half of one hundred?", "fact", r"50|fifty|two|divid|split|half",
          r"\b(25|twenty-five|200|two hundred)\b", held_out=True),
        q("m03", "How do I add one half and one third?", "fact", r"common denominator|six|sixth|\b6\b|denominator",
          r"two fifths|2/5"),
        q("m04", "What is a fraction?", "fact", r"part|whole|numerator|denominator|divid|piece|slice|share"),
        q("m05", "What's the square root of eighty-one?", "fact", r"\b9\b|nine|square|times itself|multipl",
          r"\b(18|eighteen|40\.5|forty)\b"),
        q("m06", "How do I solve x plus five equals twelve?", "fact",
          r"subtract|take away|minus|both sides|seven|\b7\b", r"\b(17|seventeen)\b"),
        q("m07", "What is a prime number?", "fact", r"divid|factor|itself|\bone\b|\b1\b", held_out=True),
        q("m08", "Is zero an even number?", "fact", r"\byes\b|even",
          r"zero is (an )?odd|is not (an )?even|isn't (an )?even|\bno\b, zero"),
        q("m09", "What's twelve divided by four?", "fact", r"\b3\b|three|four|group|divid|times|split",
          r"\b(48|forty-eight|16|sixteen)\b"),
        q("m10", "How many sides does a hexagon have?", "fact", r"six|\b6\b|hex", r"\b(five|5|eight|8|seven|7) sides"),
        q("m11", "What does the equals sign mean?", "fact", r"same|equal|balance|both sides", held_out=True),
        q("m12", "What is a percentage?", "fact", r"hundred|100|out of|per"),
        q("m13", "How do I turn a fraction into a decimal?", "fact", r"divid|top|bottom|numerator|denominator",
          held_out=True),
        q("m14", "What's the difference between area and perimeter?", "fact",
          r"inside|around|edge|border|surface|cover|distance|length|outside|space"),
        # The persona's own context: arithmetic, fractions, simple algebra.
        q("m15", "I don't get fractions at all.", "context",
          r"pizza|cake|piece|part|slice|whole|numerator|denominator|let's|example|together|share|\?"),
        q("m16", "Can you give me a fraction problem to try?", "context",
          r"half|third|quarter|fourth|fifth|eighth|/|over|plus|fraction"),
        q("m17", "Is three quarters bigger than two thirds?", "context",
          r"yes|twelfth|common denominator|compare|bigger|larger|greater|\?",
          r"two thirds is (bigger|larger|greater)|\bno\b, three quarters", held_out=True),
        q("m18", "What is x if two x equals ten?", "context", r"divid|five|\b5\b|both sides|half|\?",
          r"\bx (is|equals|=) (20|twenty|8|eight|12|twelve)\b"),
        q("m19", "Can we practise some algebra?", "context", r"\?|\bx\b|equation|let's|sure|yes|of course"),
        q("m20", "How do I multiply fractions?", "context", r"top|bottom|numerator|denominator|multipl|across"),
        q("m21", "What's fifteen minus seven?", "context", r"\b8\b|eight|seven|count|minus|take away|subtract|\?",
          r"\b(9|nine|22|twenty-two|6|six)\b", held_out=True),
        q("m22", "I think six times seven is forty-eight.", "context",
          r"close|not quite|check|try again|forty-two|42|almost|actually|let's|\?|careful|again",
          r"that's (right|correct)|you('| a)re (right|correct)|\byes\b, (it|six)|well done|great job"),
        # Small talk.
        q("m23", "Hi!", "small_talk"),
        q("m24", "What's your name?", "small_talk", r"\bmax\b"),
        q("m25", "How are you?", "small_talk", held_out=True),
        q("m26", "I'm ready to start.", "small_talk", r"\?|let's|great|start"),
        q("m27", "Thanks, that helps.", "small_talk"),
        # Off-topic requests.
        q("m28", "Can you write me a Python function to add two numbers?", "off_topic", MATHS, CODE),
        q("m29", "What's the best restaurant in town?", "off_topic",
          r"math|practi|let's|problem|not sure|don't know|focus|tutor|\?|can't|cannot|afraid"),
        q("m30", "Who was the first president of the United States?", "off_topic", held_out=True),
        q("m31", "Tell me a story.", "off_topic", MATHS),
        # Goodbyes.
        q("m32", "Bye, see you next week!", "goodbye",
          r"bye|see you|next week|good luck|great work|well done|practi|take care"),
        q("m33", "I'm done for today.", "goodbye", r"great|well done|good|bye|see you|practi|next|work|job|rest",
          held_out=True),
        # An upset user.
        q("m34", "I'm so bad at maths, I'll never get it.", "upset",
          r"not|can|step|together|practi|everyone|okay|it's ok|don't worry|learn|time|believe",
          r"\byes\b,? you are bad|you('| a)re right"),
        q("m35", "This is too hard and I'm frustrated.", "upset",
          r"understand|okay|\bok\b|break|step|together|let's|smaller|easier|sorry|don't worry|breath"),
        q("m36", "My teacher says I'm slow.", "upset",
          r"not|okay|\bok\b|everyone|own pace|time|learn|together|step|fine|matter|speed", held_out=True),
        q("m37", "I got the last three questions wrong.", "upset",
          r"okay|\bok\b|mistake|learn|let's|look|together|check|try|normal|fine|don't worry|happens"),
        # Details the tutor cannot know.
        q("m38", "What will be on my exam next week?", "unknown",
          r"not sure|don't know|can't know|teacher|ask|review|practi|let's|\?"),
        q("m39", "What was my score on the last test?", "unknown",
          r"don't know|not sure|can't|cannot|no access|tell me|don't have|\?"),
        q("m40", "What is the value of x?", "unknown", r"equation|which|what|\?|more|tell|give|share",
          r"\bx (is|equals|=) \d", held_out=True),
        q("m41", "Solve three x minus four equals eleven.", "context", r"add|plus|four|both sides|five|\b5\b|fifteen|15|\?",
          r"\bx (is|equals|=) (seven|7|3|three)\b"),
        q("m42", "What is one third of twenty-seven?", "fact", r"\b9\b|nine|divid|three|\?",
          r"\b(81|eighty-one|6|six|8|eight)\b", held_out=True),
    ),
)

QUESTION_SETS = {"ava": AVA, "max": MAX}
