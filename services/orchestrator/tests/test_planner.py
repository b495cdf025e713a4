"""The planner is deterministic and asks before researching a vague question."""

from __future__ import annotations

from runloom.corpus import text
from runloom.orchestrator import planner


def test_vague_questions_are_recognised() -> None:
    assert planner.too_vague("Can you help me with something?")
    assert planner.too_vague("Tell me about stuff")
    assert planner.too_vague("How do decorators and context managers work?") is None
    freqs, total = {"python": 900, "generators": 12, "zyxq": 0}, 1000
    assert "too broad" in (planner.too_vague("Tell me about Python", freqs, total) or "")
    assert "not in your documents" in (planner.too_vague("zyxq?", freqs, total) or "")
    assert planner.too_vague("What are generators?", freqs, total) is None


def test_plan_is_deterministic_and_splits_the_question() -> None:
    q = "How do decorators and context managers work?"
    plan = planner.plan(q, common=frozenset({"python"}))
    assert plan == planner.plan(q, common=frozenset({"python"}))
    assert [s.title for s in plan] == ["Overview", "Decorators", "Context managers"]
    assert plan[2].queries == ["context managers", "context or managers"]
    assert [s.research_step for s in plan] == ["research-1", "research-2", "research-3"]


def test_common_terms_stay_out_of_queries_unless_nothing_else() -> None:
    plan = planner.plan("python generators", common=frozenset({"python"}))
    assert all("python" not in q for s in plan for q in s.queries)
    assert planner.key_terms("python", frozenset({"python"})) == ["python"]


def test_the_answer_joins_the_plan() -> None:
    plan = planner.plan("Can you help me?", "exceptions and the try statement")
    assert {"exceptions", "try"} <= {w for s in plan for q in s.queries for w in q.split()}


def test_sentences_skip_headings_and_code() -> None:
    doc = (
        "Title\n*****\n\nThe first sentence is here. The second one follows it.\n\n"
        "   x = f(1)\n   y = 2\n"
    )
    assert text.sentences(doc) == ["The first sentence is here.", "The second one follows it."]
    assert text.count_tokens("Hello, world!") == 4


def test_sub_questions_are_questions_about_the_topics() -> None:
    plan = planner.plan("How do generators and the yield statement work?")
    assert [s.question for s in plan] == [
        "How do generators and the yield statement work?",
        "What are generators, and how do they work?",
        "What is the yield statement, and how does it work?",
    ]
    assert [s.title for s in plan] == ["Overview", "Generators", "The yield statement"]
    assert plan[2].queries == ["yield statement", "yield or statement"]


def test_one_topic_is_asked_about_the_documents_nearest_it() -> None:
    near = [("doc_f", "Function definitions"), ("doc_c", "Class definitions")]
    plan = planner.plan("What are decorators?", aspects=near)
    assert [s.question for s in plan] == [
        "What are decorators?",
        "What does 'Function definitions' say about decorators?",
        "What does 'Class definitions' say about decorators?",
    ]
    # Each is answered from its document, matched by the meaning of the user's question.
    assert [(s.document, s.meaning) for s in plan[1:]] == [
        ("doc_f", "What are decorators?"),
        ("doc_c", "What are decorators?"),
    ]
    assert plan == planner.plan("What are decorators?", aspects=near)
