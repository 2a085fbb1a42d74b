"""The Slack stand-in, driven over real HTTP by slack_sdk's own clients."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import RateLimitErrorRetryHandler, builtin_handlers
from slack_sdk.webhook import WebhookClient

from bot.shell.slack_standin import SlackStandIn, StandInEvent, StoredMessage
from bot.slack_requests import new_trigger_id
from tests.fakes.slack_double import SlackDouble

CHANNEL = "C0DEPLOYS"
GROUPS = {"S0APPROVERS": ["U0ALICE", "U0BOB"]}
USERS = {"U0ALICE": "alice", "U0BOB": "bob"}


def _standin_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t is not threading.main_thread()}


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = _standin_threads()
    yield
    leaked = [t.name for t in _standin_threads() - before if t.is_alive()]
    assert leaked == []


@pytest.fixture
def standin() -> Iterator[SlackStandIn]:
    with SlackStandIn(groups=GROUPS, users=USERS) as server:
        yield server


@pytest.fixture
def double() -> Iterator[SlackDouble]:
    with SlackDouble(groups=GROUPS, users=USERS) as server:
        yield server


@pytest.fixture
def client(standin: SlackStandIn) -> WebClient:
    return WebClient(token="xoxb-test", base_url=standin.api_url)


@pytest.fixture
def no_retry_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    """slack_sdk sleeps int(Retry-After) + random() on a 429; take the random second out so the
    retry test costs no wall-clock time (the handler's logic is otherwise untouched)."""

    class _NoJitter:
        @staticmethod
        def random() -> float:
            return 0.0

    monkeypatch.setattr(builtin_handlers, "random", _NoJitter)


def _error(excinfo: pytest.ExceptionInfo[SlackApiError]) -> Any:
    return excinfo.value.response["error"]


# --------------------------------------------------------------------- lifecycle and auth


def test_urls_point_at_an_ephemeral_port_on_localhost(standin: SlackStandIn) -> None:
    assert standin.port > 0
    assert standin.api_url == f"http://127.0.0.1:{standin.port}/api/"
    assert standin.response_url("cmd-1").startswith(f"http://127.0.0.1:{standin.port}/")


def test_stop_is_idempotent_and_a_second_start_is_refused() -> None:
    server = SlackStandIn().start()
    with pytest.raises(RuntimeError):
        server.start()
    server.stop()
    server.stop()
    with pytest.raises(RuntimeError):
        _ = server.api_url


def test_auth_test_names_the_bot(standin: SlackStandIn, client: WebClient) -> None:
    response = client.auth_test()
    assert response["ok"] is True
    assert response["team_id"] == standin.team_id
    assert response["user_id"] == standin.bot_user_id
    assert response["bot_id"] == standin.bot_id


def test_a_token_that_is_not_a_bot_token_is_refused(standin: SlackStandIn) -> None:
    for token in ("xoxp-user-token", "nonsense"):
        bad = WebClient(token=token, base_url=standin.api_url)
        with pytest.raises(SlackApiError) as excinfo:
            bad.chat_postMessage(channel=CHANNEL, text="hi")
        assert _error(excinfo) == "invalid_auth"
    with pytest.raises(SlackApiError) as excinfo:
        WebClient(base_url=standin.api_url).auth_test()
    assert _error(excinfo) == "not_authed"
    assert standin.messages(CHANNEL) == []


def test_a_configured_token_is_the_only_one_accepted() -> None:
    with SlackStandIn(token="xoxb-right") as server:
        WebClient(token="xoxb-right", base_url=server.api_url).auth_test()
        with pytest.raises(SlackApiError) as excinfo:
            WebClient(token="xoxb-wrong", base_url=server.api_url).auth_test()
        assert _error(excinfo) == "invalid_auth"


def test_an_unknown_method_answers_unknown_method_with_200(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as excinfo:
        client.api_call("conversations.history", params={"channel": CHANNEL})
    assert excinfo.value.response.status_code == 200
    assert _error(excinfo) == "unknown_method"


# --------------------------------------------------------------------- chat.*


def test_post_message_stores_it_and_answers_like_slack(
    standin: SlackStandIn, client: WebClient
) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Deploy* v1.2.3"}}]
    first = client.chat_postMessage(channel=CHANNEL, text="Deploy v1.2.3", blocks=blocks)
    second = client.chat_postMessage(channel=CHANNEL, text="second", unfurl_links=False)

    assert first["channel"] == CHANNEL
    assert first["ts"] == "1764165600.000100"
    assert first["message"]["text"] == "Deploy v1.2.3"
    assert first["message"]["blocks"] == blocks
    assert first["message"]["bot_id"] == standin.bot_id
    assert float(second["ts"]) > float(first["ts"])
    stored = standin.messages(CHANNEL)
    assert [m.ts for m in stored] == [first["ts"], second["ts"]]
    assert stored[0].blocks == blocks
    assert stored[0].thread_ts is None
    assert standin.find_message(second["ts"]) == stored[1]


def test_post_message_without_text_or_blocks_is_no_text(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as excinfo, pytest.warns(UserWarning, match="text"):
        client.chat_postMessage(channel=CHANNEL)
    assert _error(excinfo) == "no_text"


def test_a_thread_reply_lands_under_its_parent(standin: SlackStandIn, client: WebClient) -> None:
    parent = client.chat_postMessage(channel=CHANNEL, text="card")["ts"]
    quiet = client.chat_postMessage(channel=CHANNEL, text="build done", thread_ts=parent)
    loud = client.chat_postMessage(
        channel=CHANNEL, text="rolled back", thread_ts=parent, reply_broadcast=True
    )

    assert quiet["message"]["thread_ts"] == parent
    assert [m.ts for m in standin.messages(CHANNEL)] == [parent]
    replies = standin.thread(CHANNEL, parent)
    assert [(m.text, m.broadcast, m.thread_ts) for m in replies] == [
        ("build done", False, parent),
        ("rolled back", True, parent),
    ]
    assert replies[1].ts == loud["ts"]
    assert standin.messages(CHANNEL)[0].reply_count == 2


def test_strict_mode_refuses_a_thread_ts_that_names_no_top_level_message(
    standin: SlackStandIn, client: WebClient
) -> None:
    parent = client.chat_postMessage(channel=CHANNEL, text="card")["ts"]
    reply = client.chat_postMessage(channel=CHANNEL, text="r", thread_ts=parent)["ts"]
    bad_values: list[Any] = ["1764165699.999999", reply, float(parent)]
    for bad in bad_values:
        with pytest.raises(SlackApiError) as excinfo:
            client.chat_postMessage(channel=CHANNEL, text="x", thread_ts=bad)
        assert _error(excinfo) == "thread_not_found", bad
    with pytest.raises(SlackApiError) as excinfo:
        client.chat_postMessage(channel="C0OTHER", text="x", thread_ts=parent)
    assert _error(excinfo) == "thread_not_found"
    assert len(standin.thread(CHANNEL, parent)) == 1


def test_lenient_mode_takes_any_thread_ts_like_slack() -> None:
    with SlackStandIn(strict=False) as server:
        client = WebClient(token="xoxb-test", base_url=server.api_url)
        response = client.chat_postMessage(channel=CHANNEL, text="x", thread_ts="1.000001")
        assert response["ok"] is True


def test_update_replaces_content_and_counts(standin: SlackStandIn, client: WebClient) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "waiting"}}]
    ts = client.chat_postMessage(channel=CHANNEL, text="card", blocks=blocks)["ts"]
    new_blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "approved"}}]

    response = client.chat_update(channel=CHANNEL, ts=ts, text="card v2", blocks=new_blocks)
    assert response["ts"] == ts
    client.chat_update(channel=CHANNEL, ts=ts, text="card v3")  # blocks omitted: kept

    stored = standin.messages(CHANNEL)[0]
    assert (stored.text, stored.blocks, stored.updates) == ("card v3", new_blocks, 2)


def test_update_of_an_unknown_or_ephemeral_message_is_message_not_found(
    client: WebClient,
) -> None:
    ts = client.chat_postMessage(channel=CHANNEL, text="card")["ts"]
    eph = client.chat_postEphemeral(channel=CHANNEL, user="U0ALICE", text="psst")["message_ts"]
    for channel, target in (
        (CHANNEL, "1764165699.000000"),
        ("C0OTHER", ts),
        (CHANNEL, eph),
    ):
        with pytest.raises(SlackApiError) as excinfo:
            client.chat_update(channel=channel, ts=target, text="x")
        assert _error(excinfo) == "message_not_found"


def test_post_ephemeral_is_kept_for_that_user_only(
    standin: SlackStandIn, client: WebClient
) -> None:
    parent = client.chat_postMessage(channel=CHANNEL, text="card")["ts"]
    response = client.chat_postEphemeral(
        channel=CHANNEL, user="U0ALICE", text="only approvers", thread_ts=parent
    )
    client.chat_postEphemeral(channel=CHANNEL, user="U0BOB", text="for bob")

    assert response["message_ts"]
    alice = standin.ephemerals("U0ALICE")
    assert [(m.text, m.user, m.ephemeral, m.thread_ts) for m in alice] == [
        ("only approvers", "U0ALICE", True, parent)
    ]
    assert len(standin.ephemerals()) == 2
    assert standin.thread(CHANNEL, parent) == []
    assert [m.text for m in standin.transcript(CHANNEL, "U0BOB")] == ["card", "for bob"]


def test_invalid_blocks_are_refused_in_strict_mode(
    standin: SlackStandIn, client: WebClient
) -> None:
    long_button = {
        "type": "actions",
        "elements": [
            {"type": "button", "action_id": "a", "text": {"type": "plain_text", "text": "x" * 76}}
        ],
    }
    too_many = [{"type": "divider"}] * 51
    for blocks in ([long_button], too_many, [{"text": "no type"}]):
        with pytest.raises(SlackApiError) as excinfo:
            client.chat_postMessage(channel=CHANNEL, text="x", blocks=blocks)
        assert _error(excinfo) == "invalid_blocks"
        assert excinfo.value.response["errors"]
    assert standin.messages(CHANNEL) == []


def test_form_encoded_blocks_are_parsed_from_json_strings(
    standin: SlackStandIn, client: WebClient
) -> None:
    client.api_call(
        "chat.postMessage",
        data={"channel": CHANNEL, "text": "t", "blocks": '[{"type": "divider"}]'},
    )
    assert standin.messages(CHANNEL)[0].blocks == [{"type": "divider"}]


# --------------------------------------------------------------------- users, groups, views


def test_usergroup_members_come_from_the_configured_groups(client: WebClient) -> None:
    assert client.usergroups_users_list(usergroup="S0APPROVERS")["users"] == ["U0ALICE", "U0BOB"]
    with pytest.raises(SlackApiError) as excinfo:
        client.usergroups_users_list(usergroup="S0NOBODY")
    assert _error(excinfo) == "no_such_subteam"


def test_users_info_gives_the_configured_name_in_utc(client: WebClient) -> None:
    user = client.users_info(user="U0ALICE")["user"]
    assert (user["id"], user["name"], user["real_name"], user["tz"]) == (
        "U0ALICE",
        "alice",
        "alice",
        "UTC",
    )
    with pytest.raises(SlackApiError) as excinfo:
        client.users_info(user="U0STRANGER")
    assert _error(excinfo) == "user_not_found"


def test_views_open_returns_a_view_id(standin: SlackStandIn, client: WebClient) -> None:
    view = {"type": "modal", "title": {"type": "plain_text", "text": "Reason"}, "blocks": []}
    trigger = new_trigger_id()  # issued now: Slack takes a trigger within 3 s, once
    response = client.views_open(trigger_id=trigger, view=view)
    assert response["view"]["id"].startswith("V")
    assert standin.views()[0].trigger_id == trigger


def test_the_call_log_records_method_arguments_and_wire_format(
    standin: SlackStandIn, client: WebClient
) -> None:
    client.chat_postMessage(channel=CHANNEL, text="hi")
    client.users_info(user="U0ALICE")
    with pytest.raises(SlackApiError):
        client.users_info(user="U0NOBODY")

    post, *infos = standin.calls()
    assert (post.method, post.args, post.status, post.ok) == (
        "chat.postMessage",
        {"channel": CHANNEL, "text": "hi"},
        200,
        True,
    )
    assert post.content_type.startswith("application/json")
    assert [(c.args, c.ok, c.error) for c in infos] == [
        ({"user": "U0ALICE"}, True, None),
        ({"user": "U0NOBODY"}, False, "user_not_found"),
    ]
    assert all(c.content_type.startswith("application/x-www-form-urlencoded") for c in infos)
    assert standin.call_count("users.info") == 2


# --------------------------------------------------------------------- response_url


def test_response_url_replies_are_ephemeral_unless_in_channel(standin: SlackStandIn) -> None:
    url = standin.response_url("cmd-1", channel=CHANNEL, user="U0ALICE")
    webhook = WebhookClient(url)

    private = webhook.send(text="Unknown command. Did you mean `deploy`?")
    public = webhook.send(text="Deploying v1.2.3", response_type="in_channel")

    assert (private.status_code, private.body) == (200, "ok")
    assert (public.status_code, public.body) == (200, "ok")
    assert [(m.text, m.user, m.source) for m in standin.ephemerals("U0ALICE")] == [
        ("Unknown command. Did you mean `deploy`?", "U0ALICE", "response_url")
    ]
    assert [m.text for m in standin.messages(CHANNEL)] == ["Deploying v1.2.3"]
    assert standin.calls("response_url")[0].target == "cmd-1"


def test_response_url_can_replace_or_delete_the_original(
    standin: SlackStandIn, client: WebClient
) -> None:
    card = client.chat_postMessage(channel=CHANNEL, text="Approve?")["ts"]
    other = client.chat_postMessage(channel=CHANNEL, text="Cancel?")["ts"]
    replace = WebhookClient(standin.response_url("act-1", channel=CHANNEL, message_ts=card))
    delete = WebhookClient(standin.response_url("act-2", channel=CHANNEL, message_ts=other))

    assert replace.send(text="Approved by alice", replace_original=True).status_code == 200
    assert delete.send_dict({"delete_original": True}).status_code == 200

    [kept] = standin.messages(CHANNEL)
    assert (kept.ts, kept.text, kept.updates) == (card, "Approved by alice", 1)
    assert standin.find_message(other) is None


def test_a_response_url_takes_five_posts(standin: SlackStandIn) -> None:
    webhook = WebhookClient(standin.response_url("cmd-1", channel=CHANNEL, user="U0ALICE"))
    statuses = [webhook.send(text=f"reply {i}").status_code for i in range(6)]
    assert statuses == [200] * 5 + [404]
    assert len(standin.ephemerals("U0ALICE")) == 5


# --------------------------------------------------------------------- observers and waiting


def test_subscribers_see_each_change_in_order(standin: SlackStandIn, client: WebClient) -> None:
    events: list[StandInEvent] = []
    unsubscribe = standin.subscribe(events.append)

    ts = client.chat_postMessage(channel=CHANNEL, text="card")["ts"]
    client.chat_postMessage(channel=CHANNEL, text="reply", thread_ts=ts)
    client.chat_update(channel=CHANNEL, ts=ts, text="card v2")
    client.chat_postEphemeral(channel=CHANNEL, user="U0BOB", text="psst")
    unsubscribe()
    client.chat_postMessage(channel=CHANNEL, text="unseen")

    summary = []
    for kind, subject in events:
        assert isinstance(subject, StoredMessage)
        summary.append((kind, subject.text, subject.thread_ts))
    assert summary == [
        ("posted", "card", None),
        ("posted", "reply", ts),
        ("updated", "card v2", None),
        ("ephemeral", "psst", None),
    ]


def test_a_failing_subscriber_does_not_break_the_server(
    standin: SlackStandIn, client: WebClient
) -> None:
    def broken(event: StandInEvent) -> None:
        raise RuntimeError("observer bug")

    standin.subscribe(broken)
    assert client.chat_postMessage(channel=CHANNEL, text="card")["ok"] is True


def test_wait_for_wakes_on_the_change_it_waits_for(
    standin: SlackStandIn, client: WebClient
) -> None:
    poster = threading.Thread(
        target=lambda: client.chat_postMessage(channel=CHANNEL, text="from a worker")
    )
    poster.start()
    found = standin.wait_for(lambda: standin.messages(CHANNEL), timeout=5)
    poster.join()
    assert [m.text for m in found] == ["from a worker"]
    with pytest.raises(TimeoutError):
        standin.wait_for(lambda: standin.ephemerals(), timeout=0.05)


def test_timestamps_follow_an_injected_clock_and_stay_unique() -> None:
    now = [1_800_000_000.5]
    with SlackStandIn(clock=lambda: now[0]) as server:
        client = WebClient(token="xoxb-test", base_url=server.api_url)
        first = client.chat_postMessage(channel=CHANNEL, text="a")["ts"]
        second = client.chat_postMessage(channel=CHANNEL, text="b")["ts"]
        assert (first, second) == ("1800000000.500000", "1800000000.500100")
        assert server.calls()[0].at == now[0]


# --------------------------------------------------------------------- SlackDouble faults


def test_rate_limited_posts_are_retried_and_stored_once_in_order(
    double: SlackDouble, no_retry_jitter: None
) -> None:
    client = WebClient(
        token="xoxb-test",
        base_url=double.api_url,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=2)],
    )
    double.unpaced()  # seven posts at once: this is about injected 429s, not Slack's pace
    double.fail_every(3, retry_after=0)

    sent = [f"step {i}" for i in range(7)]
    answers = [client.chat_postMessage(channel=CHANNEL, text=text)["ts"] for text in sent]

    stored = double.messages(CHANNEL)
    assert [m.text for m in stored] == sent
    assert [m.ts for m in stored] == answers
    assert len(set(answers)) == len(sent)
    assert double.fault_count("chat.postMessage") == 3
    assert double.served_count("chat.postMessage") == len(sent)
    assert [c.status for c in double.calls() if c.faulted] == [429, 429, 429]


def test_a_rate_limit_without_a_retry_handler_surfaces_with_retry_after(
    double: SlackDouble,
) -> None:
    client = WebClient(token="xoxb-test", base_url=double.api_url)
    double.fail_every(1, retry_after=7, methods=["chat.postMessage"])

    with pytest.raises(SlackApiError) as excinfo:
        client.chat_postMessage(channel=CHANNEL, text="x")
    assert excinfo.value.response.status_code == 429
    assert excinfo.value.response.headers["Retry-After"] == "7"
    assert _error(excinfo) == "ratelimited"
    assert client.users_info(user="U0ALICE")["ok"] is True  # other methods unaffected
    assert double.messages(CHANNEL) == []
    assert double.faults_injected == 1


def test_fail_next_fails_once_and_changes_nothing(double: SlackDouble) -> None:
    client = WebClient(token="xoxb-test", base_url=double.api_url)
    ts = client.chat_postMessage(channel=CHANNEL, text="card")["ts"]
    double.fail_next("chat.update", error="edit_window_closed")

    with pytest.raises(SlackApiError) as excinfo:
        client.chat_update(channel=CHANNEL, ts=ts, text="v2")
    assert (excinfo.value.response.status_code, _error(excinfo)) == (200, "edit_window_closed")
    assert double.messages(CHANNEL)[0].text == "card"

    client.chat_update(channel=CHANNEL, ts=ts, text="v2")
    assert double.messages(CHANNEL)[0].updates == 1


def test_down_answers_503_to_everything_until_up(double: SlackDouble) -> None:
    client = WebClient(token="xoxb-test", base_url=double.api_url)
    webhook = WebhookClient(double.response_url("cmd-1", channel=CHANNEL, user="U0ALICE"))
    double.down()

    with pytest.raises(SlackApiError) as excinfo:
        client.chat_postMessage(channel=CHANNEL, text="x")
    assert excinfo.value.response.status_code == 503
    assert webhook.send(text="x").status_code == 503

    double.up()
    assert client.chat_postMessage(channel=CHANNEL, text="x")["ok"] is True
    assert webhook.send(text="y").status_code == 200
    assert [m.text for m in double.ephemerals()] == ["y"]
    assert double.fault_count() == 2


def test_a_faulted_response_url_post_does_not_use_the_url_up(double: SlackDouble) -> None:
    webhook = WebhookClient(double.response_url("cmd-1", channel=CHANNEL, user="U0ALICE"))
    double.fail_next("response_url", status=500)

    assert webhook.send(text="lost").status_code == 500
    assert [webhook.send(text=f"r{i}").status_code for i in range(5)] == [200] * 5
    assert len(double.ephemerals()) == 5
