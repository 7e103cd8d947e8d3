"""The recorded systems: for each framework scenario, how to run it and how its model answers.

A brain gets (run, true agent, request) and answers as that agent would; it may rely on the
true agent name (the model behind an agent knows whom it plays) but reads the request for
everything else: which tools are offered, what the conversation already holds.
A drive function builds the framework's agents for one run, each pointed at
`rec.base(run.id, agent)`, and runs the task to its end.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from typing import Any

from record import Json, Recorder, Run, Scenario
from voice import Voice

from tests.fake_upstream import Reply, ToolCall

MODEL = "gpt-4o-mini"
KEY = "sk-fake"

# Task texts: runs of a scenario must be told apart, and two share their text on purpose.
RESEARCH_TASKS = (
    "Estimate how the adoption of heat pumps in Northern European households changed over the last five years.",
    "Summarise the main risks of migrating a payments platform from a monolith to microservices.",
    "Compare the battery recycling policies of Germany, France and Spain and say which works best.",
    "Summarise the main risks of migrating a payments platform from a monolith to microservices.",
    "Assess whether mid-sized hospitals benefit from switching to cloud-hosted patient record systems.",
    "Find out how remote work has affected commercial property prices in three large US cities.",
)
WRITING_TASKS = (
    "Write a short product announcement for a budgeting app that adds shared family wallets.",
    "Draft a blog post introduction about why small bakeries should adopt online pre-ordering.",
    "Write a short product announcement for a budgeting app that adds shared family wallets.",
    "Prepare a one-paragraph briefing on water scarcity risks for a vineyard in southern Spain.",
    "Write the opening section of a newsletter announcing a city's new night-bus network.",
    "Draft a short customer email explaining a two-day delay in furniture deliveries.",
)


# ----------------------------------------------------------------------------- request reading
def messages(req: Json) -> list[Json]:
    return [m for m in req.get("messages") or [] if isinstance(m, dict)]


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def tool_names(req: Json) -> list[str]:
    return [t.get("function", {}).get("name", "") for t in req.get("tools") or []]


def last_text(req: Json) -> str:
    msgs = messages(req)
    return text_of(msgs[-1].get("content")) if msgs else ""


def first_user(req: Json) -> str:
    return next((text_of(m.get("content")) for m in messages(req) if m.get("role") == "user"), "")


def voice(run: Run) -> Voice:
    v: Voice | None = run.state.get("voice")
    if v is None:
        v = run.state["voice"] = Voice(run.rng, topic_of(run.task))
    return v


def topic_of(task: str) -> str:
    words = [w.strip(".,") for w in task.split() if len(w) > 3]
    return " ".join(words[2:8]).lower()


def call(name: str, run: Run, agent: str, **args: Any) -> ToolCall:
    """A tool call with a fixed id (later requests quote it), unique per run and agent."""
    n = run.state.setdefault("calls", 0) + 1
    run.state["calls"] = n
    return ToolCall(name, args, id=f"call_{run.id}_{agent}_{n}")


# ----------------------------------------------------------------------------- smolagents
def smol_search(query: str) -> str:
    import random

    rng = random.Random(query)
    v = Voice(rng, query)
    return "\n".join(f"[{i + 1}] {v.fact()} (source: example-{rng.randint(100, 999)}.org)" for i in range(3))


def _observed(req: Json) -> str:
    """The first sentence with a figure in the last observation (what a manager would quote)."""
    text = last_text(req)
    for sentence in text.replace("\n", " ").split(". "):
        if any(ch.isdigit() for ch in sentence) and "managed agent" not in sentence:
            return sentence.strip() + "."
    return text[-200:]


def smol_toolcalling_brain(run: Run, agent: str, req: Json) -> Reply:
    v, turn = voice(run), run.turn(agent)
    if agent == "manager":
        if turn == 0:
            task = f"{run.task} Focus on {v.query()}; report concrete figures and name your sources."
            return Reply(text="", tool_calls=[call("researcher", run, agent, task=task)])
        if turn == 1:
            task = f"Check these figures against a second source: {_observed(req)}"
            return Reply(text="", tool_calls=[call("fact_checker", run, agent, task=task)])
        return Reply(tool_calls=[call("final_answer", run, agent, answer=v.answer(3))])
    if turn % 2 == 0:
        return Reply(tool_calls=[call("web_search", run, agent, query=v.query())])
    return Reply(tool_calls=[call("final_answer", run, agent, answer=v.answer(4, closer=False))])


def smol_code_brain(run: Run, agent: str, req: Json) -> Reply:
    v, turn = voice(run), run.turn(agent)
    if agent == "manager":
        if turn == 0:
            task = f"{run.task} Gather recent figures on {v.query()}."
            return Reply(text=f"Thought: I will ask the analyst to gather the data first.\n<code>\n"
                              f"report = analyst(task={task!r})\nprint(report)\n")
        if turn == 1:
            task = f"Double-check the most important figure of this report: {_observed(req)}"
            return Reply(text=f"Thought: Some figures look surprising; I will ask the statistician to verify them.\n"
                              f"<code>\ncheck = statistician(task={task!r})\nprint(check)\n")
        return Reply(text=f"Thought: The analyst's report answers the task; I can conclude.\n<code>\n"
                          f"final_answer({v.answer(3)!r})\n")
    if turn % 2 == 0:
        return Reply(text=f"Thought: I need data first, so I will search the web.\n<code>\n"
                          f"results = web_search(query={v.query()!r})\nprint(results)\n")
    return Reply(text=f"Thought: I have enough information to write the report.\n<code>\n"
                      f"final_answer({v.answer(4, closer=False)!r})\n")


def smol_drive(code: bool) -> Any:
    def drive(rec: Recorder, run: Run) -> None:
        import smolagents as sa

        @sa.tool
        def web_search(query: str) -> str:
            """Searches the web and returns the top results.

            Args:
                query: what to search for.
            """
            return smol_search(query)

        def model(agent: str) -> Any:
            return sa.OpenAIServerModel(MODEL, api_base=rec.base(run.id, agent), api_key=KEY)

        kind = sa.CodeAgent if code else sa.ToolCallingAgent
        names = ("analyst", "statistician") if code else ("researcher", "fact_checker")
        descriptions = ("Searches the web and reports findings with figures and sources.",
                        "Verifies figures against independent sources.")
        # both workers get the same tools, so the same rendered system prompt: only the task differs
        workers = [kind(tools=[web_search], model=model(name), name=name, max_steps=4, description=text,
                        verbosity_level=0) for name, text in zip(names, descriptions, strict=True)]
        manager = kind(tools=[], model=model("manager"), managed_agents=workers, max_steps=4, verbosity_level=0)
        manager.run(run.task)

    return drive


# ----------------------------------------------------------------------------- pydantic-ai
def pai_brain(run: Run, agent: str, req: Json) -> Reply:
    v, turn = voice(run), run.turn(agent)
    if agent == "coordinator":
        if turn == 0:
            first, second = v.query(), v.query()
            return Reply(tool_calls=[call("research", run, agent, topic=first),
                                     call("research", run, agent, topic=second)])
        return Reply(text=v.answer(3))
    return Reply(text=v.answer(4))


def pai_drive(instructions: bool) -> Any:
    def drive(rec: Recorder, run: Run) -> None:
        from pydantic_ai import Agent, RunContext
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider

        def model(agent: str) -> Any:
            return OpenAIChatModel(MODEL, provider=OpenAIProvider(base_url=rec.base(run.id, agent), api_key=KEY))

        child_kw: dict[str, Any] = {}
        parent_kw: dict[str, Any] = {}
        if instructions:
            child_kw["instructions"] = ("You are a meticulous research assistant. Answer with concrete figures, "
                                        "dates and sources; never speculate.")
            parent_kw["instructions"] = ("You coordinate research. Split the user's question into topics, call the "
                                         "research tool once per topic, then write a concise synthesis.")
        child = Agent(model("researcher"), **child_kw)
        parent = Agent(model("coordinator"), **parent_kw)

        async def research(ctx, topic):  # type: ignore[no-untyped-def]
            """Research one topic in depth and return the findings."""
            result = await child.run(f"Research this topic: {topic}", usage=ctx.usage)
            return str(result.output)

        # real annotations: pydantic-ai reads them, and this module's are strings
        research.__annotations__ = {"ctx": RunContext[None], "topic": str, "return": str}
        parent.tool(research)

        parent.run_sync(run.task)

    return drive


# ----------------------------------------------------------------------------- AutoGen AgentChat
AG_PROMPTS = {
    "planner": "You are the planner of a small content team. Break the request into a short outline that the "
               "writer can follow; do not write the text yourself.",
    "writer": "You are the writer. Turn the planner's outline into polished prose and revise it when the critic "
              "asks for changes.",
    "critic": "You are the critic. Review the writer's latest draft, list concrete problems, and reply APPROVED "
              "followed by TERMINATE when the draft is ready.",
}
SELECTOR_SCHEDULE = ("planner", "writer", "critic", "writer", "critic")


def team_member(run: Run, agent: str, turn: int) -> Reply:
    """The planner / writer / critic of a content team (AutoGen and AG2 group chats)."""
    v = voice(run)
    if agent == "planner":
        head = "Outline:" if turn == 0 else "Revised outline, taking the critic's notes into account:"
        return Reply(text=f"{head}\n{v.bullets(3, '1. ')}\nWriter, please draft this.")
    if agent == "writer":
        head = "Draft:" if turn == 0 else "Revised draft:"
        return Reply(text=f"{head}\n\n{v.paragraph(4)}")
    if turn == 0:
        return Reply(text=f"Two problems with the draft:\n{v.bullets(2)}\nPlease revise.")
    return Reply(text=f"APPROVED. {v.fact()} The draft is ready to publish.\n\nTERMINATE")


def autogen_brain(run: Run, agent: str, req: Json) -> Reply:
    turn = run.turn(agent)
    if agent == "selector":
        return Reply(text=SELECTOR_SCHEDULE[min(turn, len(SELECTOR_SCHEDULE) - 1)])
    return team_member(run, agent, turn)


def autogen_drive(selector: bool) -> Any:
    def drive(rec: Recorder, run: Run) -> None:
        from autogen_agentchat.agents import AssistantAgent
        from autogen_agentchat.conditions import MaxMessageTermination, TextMentionTermination
        from autogen_agentchat.teams import RoundRobinGroupChat, SelectorGroupChat
        from autogen_ext.models.openai import OpenAIChatCompletionClient

        def client(agent: str) -> Any:
            return OpenAIChatCompletionClient(model=MODEL, base_url=rec.base(run.id, agent), api_key=KEY)

        members = [
            AssistantAgent(name, model_client=client(name), system_message=prompt,
                           description=prompt.split(".")[0], model_client_stream=not selector)
            for name, prompt in AG_PROMPTS.items()
        ]
        stop = TextMentionTermination("TERMINATE") | MaxMessageTermination(10)
        if selector:
            team: Any = SelectorGroupChat(members, model_client=client("selector"), termination_condition=stop)
        else:
            team = RoundRobinGroupChat(members, termination_condition=stop)
        asyncio.run(team.run(task=run.task))

    return drive


# ----------------------------------------------------------------------------- AG2
def ag2_brain(run: Run, agent: str, req: Json) -> Reply:
    turn = run.turn(agent)
    if agent == "manager":  # GroupChatManager's auto speaker selection
        return Reply(text=SELECTOR_SCHEDULE[min(turn, len(SELECTOR_SCHEDULE) - 1)])
    return team_member(run, agent, turn)


def ag2_drive(own_prompts: bool) -> Any:
    def drive(rec: Recorder, run: Run) -> None:
        import autogen

        def llm(agent: str) -> Json:
            return {"config_list": [{"model": MODEL, "base_url": rec.base(run.id, agent), "api_key": KEY}],
                    "cache_seed": None}

        def done(m: Json) -> bool:
            return "TERMINATE" in str(m.get("content") or "")

        user = autogen.UserProxyAgent("user", human_input_mode="NEVER", code_execution_config=False,
                                      is_termination_msg=done, default_auto_reply="Please continue.")
        members = []
        for name, prompt in AG_PROMPTS.items():
            kw = {"system_message": prompt} if own_prompts else {}
            members.append(autogen.AssistantAgent(name, llm_config=llm(name), description=prompt.split(".")[0],
                                                  is_termination_msg=done, **kw))
        chat = autogen.GroupChat([user, *members], messages=[], max_round=8, speaker_selection_method="auto",
                                 allow_repeat_speaker=False)
        manager = autogen.GroupChatManager(chat, llm_config=llm("manager"), is_termination_msg=done)
        user.initiate_chat(manager, message=run.task, silent=True)

    return drive


# ----------------------------------------------------------------------------- CrewAI
CREW_ROLES = {
    "researcher": ("Senior Researcher", "Collect accurate, recent facts about the topic",
                   "A veteran analyst who digs up primary sources and hard numbers."),
    "analyst": ("Data Analyst", "Turn raw facts into a clear assessment",
                "A careful analyst who weighs evidence and spots trends."),
    "writer": ("Content Writer", "Write a compelling, accurate brief",
               "A writer who turns research and analysis into crisp prose."),
}

CREW_TASK_WORDS = {"researcher": "Research:", "analyst": "Analyse", "writer": "Write the final brief"}


def crew_brain(run: Run, agent: str, req: Json) -> Reply:
    v = voice(run)
    if agent == "manager":  # hierarchical: one delegation per task, then the task's answer
        delegate = next((n for n in tool_names(req) if "delegate" in n.lower()), None)
        answered = [text_of(m.get("content")) for m in messages(req) if m.get("role") == "tool"]
        if delegate and not answered:
            task = first_user(req)
            role = next((r for key, (r, _, _) in CREW_ROLES.items() if CREW_TASK_WORDS[key] in task),
                        "Senior Researcher")
            what = task.split("Current Task: ", 1)[-1].split("\n", 1)[0]
            return Reply(tool_calls=[call(delegate, run, agent, task=f"{what} Focus on {v.query()}.",
                                          context=v.fact(), coworker=role)])
        body = (answered[-1] + "\n\n" + v.fact()) if answered else v.answer(3)
    elif agent == "writer":
        body = v.answer(5)
    else:
        body = v.bullets(4)
    return Reply(text=f"Thought: I now can give a great answer\nFinal Answer: {body}")


def crew_drive(hierarchical: bool) -> Any:
    def drive(rec: Recorder, run: Run) -> None:
        from crewai import LLM, Agent, Crew, Process, Task

        def llm(agent: str) -> Any:
            return LLM(model=f"openai/{MODEL}", base_url=rec.base(run.id, agent), api_key=KEY)

        agents = {name: Agent(role=role, goal=goal, backstory=story, llm=llm(name), allow_delegation=False,
                              verbose=False)
                  for name, (role, goal, story) in CREW_ROLES.items()}
        def owner(name: str) -> Any:  # hierarchical: the manager picks the coworker
            return None if hierarchical else agents[name]

        research = Task(description=f"Research: {run.task}", expected_output="A bullet list of facts with figures",
                        agent=owner("researcher"))
        analysis = Task(description="Analyse the research findings and assess what they mean.",
                        expected_output="A short assessment", agent=owner("analyst"), context=[research])
        brief = Task(description=f"Write the final brief for: {run.task}", expected_output="Two paragraphs",
                     agent=owner("writer"), context=[research, analysis])
        if hierarchical:
            crew = Crew(agents=list(agents.values()), tasks=[research, analysis, brief], process=Process.hierarchical,
                        manager_llm=llm("manager"), verbose=False)
        else:
            crew = Crew(agents=list(agents.values()), tasks=[research, analysis, brief], process=Process.sequential,
                        verbose=False)
        crew.kickoff()

    return drive


# ----------------------------------------------------------------------------- registry
def scenarios() -> Iterator[tuple[str, Scenario]]:
    """(module the scenario needs, scenario)."""
    yield "smolagents", Scenario(
        "smolagents", "toolcalling", "smolagents", RESEARCH_TASKS, smol_toolcalling_brain, smol_drive(False),
        "ToolCallingAgent manager with two managed ToolCallingAgents 'researcher' and 'fact_checker' "
        "(same tools, so the same rendered system prompt)")
    yield "smolagents", Scenario(
        "smolagents", "code", "smolagents", RESEARCH_TASKS, smol_code_brain, smol_drive(True),
        "CodeAgent manager with two managed CodeAgents 'analyst' and 'statistician' (same tools, so the same "
        "rendered system prompt)")
    yield "pydantic_ai", Scenario(
        "pydantic_ai", "delegation", "pydantic-ai-slim", RESEARCH_TASKS, pai_brain, pai_drive(True),
        "coordinator with a `research` tool that runs a researcher agent (two parallel calls); both with instructions")
    yield "pydantic_ai", Scenario(
        "pydantic_ai", "delegation_bare", "pydantic-ai-slim", RESEARCH_TASKS, pai_brain, pai_drive(False),
        "the same delegation with no instructions and no system prompts at all")

    yield "autogen_agentchat", Scenario(
        "autogen", "roundrobin", "autogen-agentchat", WRITING_TASKS, autogen_brain, autogen_drive(False),
        "RoundRobinGroupChat planner → writer → critic (x2), own system messages, streamed (SSE)")
    yield "autogen_agentchat", Scenario(
        "autogen", "selector", "autogen-agentchat", WRITING_TASKS, autogen_brain, autogen_drive(True),
        "SelectorGroupChat of the same three; the selector model picks each speaker from a transcript prompt")

    yield "autogen", Scenario(
        "ag2", "groupchat", "ag2", WRITING_TASKS, ag2_brain, ag2_drive(True),
        "GroupChat user/planner/writer/critic with own system messages; GroupChatManager auto speaker selection, "
        "allow_repeat_speaker=False")
    yield "autogen", Scenario(
        "ag2", "groupchat_default", "ag2", WRITING_TASKS, ag2_brain, ag2_drive(False),
        "the same GroupChat where every assistant keeps AG2's default system message (descriptions differ)")

    yield "crewai", Scenario(
        "crewai", "sequential", "crewai", RESEARCH_TASKS, crew_brain, crew_drive(False),
        "sequential crew researcher → analyst → writer; the writer's task has both earlier tasks as context")
    yield "crewai", Scenario(
        "crewai", "hierarchical", "crewai", RESEARCH_TASKS, crew_brain, crew_drive(True),
        "hierarchical crew: a manager LLM delegates the three tasks to the coworkers")


def available() -> Iterator[Scenario]:
    for module, scenario in scenarios():
        if importlib.util.find_spec(module) is not None:
            yield scenario

