"""Named prompt templates, one per task, shared by SFT, GRPO and evaluation (no tokenizer here).

Every prompt is the Alpaca-style frame MiniOneRec uses, with the response slot always empty::

    Below is an instruction ... completes the request.

    ### Instruction:
    <instruction>

    ### User Input:
    <input>

    ### Response:
    <- the model writes the response here, then EOS

Deliberate deviations from the original (minionerec-reference.md section 2, defects 1, 2, 7):
the answer never appears in the prompt; the next-item prompt is the same in every stage; typos
("recetenly", "palyed", "itemss", "items items") and the video-game wording are gone; the stray
space after "User Input:" is dropped; a SID response ends with EOS directly (no ``\\n`` before
it), so constrained decoding costs exactly one forward pass per SID level after the prefill.

Compact templates (``*_compact``) drop the frame for models trained from scratch, which have no
use for instructions: the history's SID tokens back to back (each item starts with its level-``a``
token, so no separator is needed), then ``"\\n"``. The Alpaca frame is ~95% of a next-item example's
tokens, so an epoch costs a fraction of a framed one. Which template the next-item prompt of a run
uses (SFT validation, evaluation, GRPO) is the data module's ``next_item_task``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

PREAMBLE = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
)
RESPONSE_MARKER = "### Response:\n"
COMPACT_END = "\n"  # ends a compact prompt: the response follows


@dataclass(frozen=True)
class PromptTemplate:
    """An instruction and an input template; fields are filled with :meth:`str.format`.

    Fields available to templates: ``history_sids``, ``history_titles``, ``category``, ``sid``,
    ``title``.
    """

    name: str
    instruction: str
    input: str
    response: str  # "sid" or "title": what the answer is
    framed: bool = True  # False: the input alone, then COMPACT_END (no preamble, instruction or markers)
    history_separator: str = ", "  # between history items, see join_history

    def render(self, **fields: str) -> str:
        """The full prompt text, ending in ``"### Response:\\n"`` (framed) or ``"\\n"`` (compact)."""
        if not self.framed:
            return self.input.format(**fields) + COMPACT_END
        return render_prompt(self.instruction.format(**fields), self.input.format(**fields))

    def join_history(self, sids: Sequence[str]) -> str:
        """History SIDs as this template shows them (``", "``-separated, or back to back when compact)."""
        return self.history_separator.join(sids)


def render_prompt(instruction: str, input_text: str) -> str:
    """Frame an instruction and an input; the response slot is left empty."""
    return f"{PREAMBLE}### Instruction:\n{instruction}\n\n### User Input:\n{input_text}\n\n{RESPONSE_MARKER}"


def join_sids(sids: Sequence[str]) -> str:
    """History SIDs as they appear in prompts: ``"<a_1><b_2><c_3>, <a_4><b_5><c_6>"``."""
    return ", ".join(sids)


def join_titles(titles: Sequence[str]) -> str:
    """History titles as they appear in prompts: each in double quotes, comma-separated."""
    return ", ".join(f'"{title}"' for title in titles)


NEXT_ITEM = "sid_history_to_sid"

TEMPLATES: dict[str, PromptTemplate] = {
    template.name: template
    for template in (
        PromptTemplate(
            name="sid_history_to_sid",
            instruction="Can you predict the next possible item that the user may expect?",
            input="The user has interacted with items {history_sids} in chronological order. "
            "Can you predict the next possible item that the user may expect?",
            response="sid",
        ),
        PromptTemplate(
            name="title_history_to_sid",
            instruction="Based on the user's historical interaction with item titles, predict the "
            "semantic ID of the next item they may expect.",
            input="The user has interacted with the following {category} in chronological order: "
            "{history_titles}. Can you predict the next item the user may expect?",
            response="sid",
        ),
        PromptTemplate(
            name="sid_history_to_title",
            instruction="Can you recommend the next item for the user based on their interaction history?",
            input="The user has sequentially interacted with items {history_sids}. Can you recommend "
            "the next item for the user? Tell me the title of the item.",
            response="title",
        ),
        PromptTemplate(
            name="title_history_to_title",
            instruction="Given the {category} the user has recently enjoyed, please recommend a new "
            "one that the user may buy.",
            input="The user has bought the following {category} before: {history_titles}",
            response="title",
        ),
        PromptTemplate(
            name="title_to_sid",
            instruction="Answer the question about item identification.",
            input="Which item has the title: {title}?",
            response="sid",
        ),
        PromptTemplate(
            name="sid_to_title",
            instruction="Answer the question about item identification.",
            input='What is the title of item "{sid}"?',
            response="title",
        ),
        PromptTemplate(
            name="sid_history_to_sid_compact",
            instruction="",
            input="{history_sids}",
            response="sid",
            framed=False,
            history_separator="",
        ),
        PromptTemplate(
            name="title_to_sid_compact",
            instruction="",
            input="{title}",
            response="sid",
            framed=False,
        ),
    )
}


def get_template(name: str) -> PromptTemplate:
    """Look up a template by name, with the list of known names on error."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise KeyError(f"unknown prompt task {name!r}; known tasks: {sorted(TEMPLATES)}") from None


def category_display_name(category: str) -> str:
    """Default natural-language name from a file-style category: ``Industrial_and_Scientific`` ->
    ``"industrial and scientific items"``. Override it in config for anything better."""
    words = category.replace("_", " ").replace("-", " ").strip().lower()
    return words if words.endswith(("items", "products")) else f"{words} items"
