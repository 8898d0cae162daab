"""The stand-in Linear and Jira servers (tests/fakes/linear_standin.py, jira_standin.py) are as
strict as the real services where PROTOCOLS.md says they are: the tracker clients are only
tested against them, so a stand-in that accepted what Linear or Jira refuses would hide bugs.
(Named so as not to clash with tests/test_standins.py: test modules share one namespace.)"""

from __future__ import annotations

import base64
import time

import httpx
import pytest

ISSUE = "query($id: String!) { issue(id: $id) { id identifier state { name } } }"


def gql(lin, query: str, variables: dict | None = None, key: str | None = None) -> httpx.Response:
    return httpx.post(lin.url, json={"query": query, "variables": variables or {}},
                      headers={"Authorization": lin.api_key if key is None else key}, timeout=30)


def codes(response: httpx.Response) -> list[str]:
    return [e["extensions"]["code"] for e in response.json()["errors"]]


def jira(js, method: str, path: str, auth: tuple | None = None, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{js.url}/rest/api/3/{path}", auth=auth or (js.email, js.api_token),
                         timeout=30, **kwargs)


def adf(text: str) -> dict:
    return {"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": [{"type": "text", "text": text}]}]}


# ----- Linear ------------------------------------------------------------------------------------

def test_linear_takes_the_key_as_it_is_and_refuses_bearer(linear_standin):
    lin = linear_standin
    for key in (f"Bearer {lin.api_key}", "lin_api_other", ""):
        refused = gql(lin, "{ viewer { id } }", key=key)
        assert refused.status_code == 401 and codes(refused) == ["AUTHENTICATION_ERROR"]
    accepted = gql(lin, "{ viewer { id email } }")
    assert accepted.status_code == 200 and accepted.json()["data"]["viewer"]["email"]


def test_linear_validates_like_linear(linear_standin):
    lin = linear_standin
    [issue] = lin.admin.seed([{"title": "One"}])
    refused = {
        "an ID! id": ("query($id: ID!) { issue(id: $id) { id } }", {"id": issue["id"]}),
        "a String id filter": ("query($ids: [String!]!) { issues(filter: {id: {in: $ids}}) { nodes { id } } }",
                               {"ids": [issue["id"]]}),
        "an unused variable": ("query($id: String!, $team: String) { issue(id: $id) { id } }", {"id": issue["id"]}),
        "an unknown field": ("query($id: String!) { issue(id: $id) { id links { id } } }", {"id": issue["id"]}),
        "an unknown argument": ("{ issues(filter: {identifier: {eq: \"ENG-1\"}}) { nodes { id } } }", {}),
        "a missing variable": (ISSUE, {}),
    }
    for what, (query, variables) in refused.items():
        response = gql(lin, query, variables)
        assert response.status_code == 400, what
        assert codes(response)[0] == "GRAPHQL_VALIDATION_FAILED", what
    ok = gql(lin, "query($ids: [ID!]!) { issues(filter: {id: {in: $ids}}) { nodes { identifier } } }", {"ids": [issue["id"]]})
    assert ok.json()["data"]["issues"]["nodes"] == [{"identifier": "ENG-1"}]
    syntax = gql(lin, "{ issues { nodes { id }")
    assert syntax.status_code == 400 and codes(syntax) == ["GRAPHQL_PARSE_FAILED"]


def test_linear_unknown_issue_is_entity_not_found_with_null_data(linear_standin):
    lin = linear_standin
    [issue] = lin.admin.seed([{"title": "One", "state": "In Progress"}])
    by_identifier = gql(lin, ISSUE, {"id": "eng-1"}).json()
    assert by_identifier["data"]["issue"] == {"id": issue["id"], "identifier": "ENG-1", "state": {"name": "In Progress"}}
    missing = gql(lin, ISSUE, {"id": "9b2b2f8e-0000-4000-8000-000000000000"})
    assert missing.status_code == 200
    body = missing.json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "INPUT_ERROR"
    assert body["errors"][0]["message"].startswith("Entity not found")


def test_linear_filters_and_pages(linear_standin):
    lin = linear_standin
    lin.admin.seed([{"title": f"Mine {n}", "labels": ["baton"], "state": "Todo" if n % 2 else "In Progress"}
                    for n in range(7)]
                   + [{"title": "Unlabelled"}, {"title": "Done", "state": "Done", "labels": ["baton"]},
                      {"title": "Other team", "team": "OPS", "labels": ["baton"]},
                      {"title": "In a project", "labels": ["frontend"], "project": "web-app"}])
    query = """query($team: String!, $labels: [String!]!, $states: [String!]!, $after: String) {
      issues(first: 3, after: $after, filter: {team: {key: {eq: $team}}, labels: {some: {name: {in: $labels}}},
                                               state: {name: {in: $states}}}) {
        nodes { title priority labels { nodes { name } } } pageInfo { hasNextPage endCursor } } }"""
    titles, after, pages = [], None, 0
    while True:
        page = gql(lin, query, {"team": "ENG", "labels": ["baton"], "states": ["Todo", "In Progress"], "after": after})
        connection = page.json()["data"]["issues"]
        titles += [node["title"] for node in connection["nodes"]]
        pages += 1
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]
    assert pages == 3 and sorted(titles) == [f"Mine {n}" for n in range(7)]
    in_project = gql(lin, '{ issues(filter: {project: {slugId: {eq: "web-app"}}}) { nodes { title project { slugId } } } }')
    assert in_project.json()["data"]["issues"]["nodes"] == [{"title": "In a project", "project": {"slugId": "web-app"}}]
    too_many = gql(lin, "{ issues(first: 251) { nodes { id } } }").json()
    assert too_many["data"] is None and too_many["errors"][0]["extensions"]["code"] == "INPUT_ERROR"


def test_linear_moves_and_comments_through_mutations(linear_standin):
    lin = linear_standin
    [issue] = lin.admin.seed([{"title": "One"}])
    lin.admin.seed([{"title": "Elsewhere", "team": "OPS"}])
    states = gql(lin, 'query($team: String!) { workflowStates(filter: {team: {key: {eq: $team}}}) { nodes { id name type } } }',
                 {"team": "ENG"}).json()["data"]["workflowStates"]["nodes"]
    assert [s["name"] for s in states] == ["Backlog", "Todo", "In Progress", "In Review", "Done", "Canceled", "Duplicate"]
    started = next(s for s in states if s["name"] == "In Progress")
    move = """mutation($id: String!, $stateId: String!) { issueUpdate(id: $id, input: {stateId: $stateId}) {
                success issue { state { name type } } } }"""
    moved = gql(lin, move, {"id": issue["id"], "stateId": started["id"]}).json()["data"]["issueUpdate"]
    assert moved == {"success": True, "issue": {"state": {"name": "In Progress", "type": "started"}}}
    ops_done = gql(lin, '{ workflowStates(filter: {team: {key: {eq: "OPS"}}, name: {eq: "Done"}}) { nodes { id } } }'
                   ).json()["data"]["workflowStates"]["nodes"][0]["id"]
    other_team = gql(lin, move, {"id": issue["id"], "stateId": ops_done}).json()
    assert other_team["data"] is None and other_team["errors"][0]["extensions"]["code"] == "INPUT_ERROR"
    comment = """mutation($issueId: String!, $body: String!) { commentCreate(input: {issueId: $issueId, body: $body}) {
                   success comment { id body } } }"""
    created = gql(lin, comment, {"issueId": issue["id"], "body": "Landed **abc123**"}).json()["data"]["commentCreate"]
    assert created["success"] is True and created["comment"]["body"] == "Landed **abc123**"
    seen = lin.admin.issue("ENG-1")
    assert seen["state"] == "In Progress"
    assert [(h["from"], h["to"], h["by"]) for h in seen["history"]] == [("Todo", "In Progress", "api")]
    assert [(c["body"], c["by"]) for c in seen["comments"]] == [("Landed **abc123**", "api")]


def test_linear_rate_limit_headers_injected_limits_and_outages(linear_standin):
    lin = linear_standin
    normal = gql(lin, "{ viewer { id } }")
    for header in ("X-RateLimit-Requests-Limit", "X-RateLimit-Requests-Remaining", "X-RateLimit-Requests-Reset"):
        assert int(normal.headers[header]) > 0
    for status in (400, 429):
        lin.admin.fail("rate_limit", count=1, retry_after=2, status=status)
        limited = gql(lin, "{ viewer { id } }")
        assert limited.status_code == status and codes(limited) == ["RATELIMITED"]
        assert limited.headers["Retry-After"] == "2" and limited.headers["X-RateLimit-Requests-Remaining"] == "0"
        assert int(limited.headers["X-RateLimit-Requests-Reset"]) > time.time() * 1000  # epoch ms, ahead
        assert gql(lin, "{ viewer { id } }").status_code == 200  # count: 1 -> the next one passes
    lin.admin.fail("outage", count=2)
    assert [gql(lin, "{ viewer { id } }").status_code for _ in range(3)] == [503, 503, 200]


def test_linear_counts_every_request(linear_standin):
    lin = linear_standin
    lin.admin.reset()
    gql(lin, "{ viewer { id } }", key="Bearer nope")
    gql(lin, ISSUE, {"id": "nope"})
    gql(lin, "{ viewer { id } }")
    stats = lin.admin.stats()
    assert stats == {"calls": 3, "by_operation": {"viewer": 2, "issue": 1}}
    assert [r["status"] for r in lin.admin.requests()] == [401, 200, 200]
    assert lin.admin.reset() == {"calls": 0, "by_operation": {}}


# ----- Jira --------------------------------------------------------------------------------------

def test_jira_needs_basic_auth_with_email_and_token(jira_standin):
    js = jira_standin
    for auth in ((js.email, "wrong"), ("someone@example.com", js.api_token)):
        refused = jira(js, "GET", "myself", auth=auth)
        assert refused.status_code == 401 and "must be authenticated" in refused.text
    bearer = httpx.get(f"{js.url}/rest/api/3/myself", headers={"Authorization": f"Bearer {js.api_token}"}, timeout=30)
    assert bearer.status_code == 401
    me = jira(js, "GET", "myself")
    assert me.status_code == 200 and me.json()["emailAddress"] == js.email


def test_jira_search_is_strict(jira_standin):
    js = jira_standin
    js.admin.seed([{"title": "One", "labels": ["baton"]}])

    def search(body: dict) -> httpx.Response:
        return jira(js, "POST", "search/jql", json=body)

    old_style = search({"jql": "project = SHOP", "startAt": 0})
    assert old_style.status_code == 400 and "startAt" in old_style.json()["errorMessages"][0]
    for unbounded in ('status = "To Do"', "ORDER BY created", 'labels = baton OR project = SHOP', ""):
        response = search({"jql": unbounded})
        assert response.status_code == 400, unbounded
        assert "Unbounded" in response.json()["errorMessages"][0]
    unknown = search({"jql": 'project = "SHOP" AND status IN ("To Do", "Doing")'})
    assert unknown.status_code == 400
    assert unknown.json() == {"errorMessages": ["The value 'Doing' does not exist for the field 'status'."], "errors": {}}
    assert search({"jql": "project = NOPE"}).status_code == 400
    assert search({"jql": "project = SHOP AND colour = red"}).status_code == 400
    ids_only = search({"jql": "project = SHOP"}).json()
    assert ids_only == {"issues": [{"id": "10001"}], "isLast": True}
    for path in ("search?jql=project%3DSHOP",):
        assert jira(js, "GET", path).status_code == 410
    assert jira(js, "POST", "search", json={"jql": "project = SHOP"}).status_code == 410


def test_jira_search_filters_orders_and_pages(jira_standin):
    js = jira_standin
    js.admin.seed([{"title": f"Mine {n}", "labels": ["baton"], "state": ["To Do", "In Progress"][n % 2],
                    "priority": ["High", "Low"][n % 2]} for n in range(5)]
                  + [{"title": "Unlabelled"}, {"title": "Done", "state": "Done", "labels": ["baton"]},
                     {"title": "Other project", "project": "OPS", "labels": ["baton"]}])
    jql = ('project = "SHOP" AND status IN ("To Do","In Progress") AND labels IN ("baton") '
           'AND (priority = High OR priority = Low) ORDER BY priority DESC, created ASC')
    found, token, pages = [], None, 0
    while True:
        body = {"jql": jql, "fields": ["summary", "status", "priority", "labels", "updated"], "maxResults": 2}
        if token:
            body["nextPageToken"] = token
        page = jira(js, "POST", "search/jql", json=body).json()
        pages += 1
        found += [(i["key"], i["fields"]["summary"], i["fields"]["priority"]["name"]) for i in page["issues"]]
        if page["isLast"]:
            assert "nextPageToken" not in page
            break
        token = page["nextPageToken"]
    assert pages == 3
    assert found == [("SHOP-1", "Mine 0", "High"), ("SHOP-3", "Mine 2", "High"), ("SHOP-5", "Mine 4", "High"),
                     ("SHOP-2", "Mine 1", "Low"), ("SHOP-4", "Mine 3", "Low")]
    fields = jira(js, "POST", "search/jql", json={"jql": "project = OPS", "fields": ["status"]}).json()["issues"][0]
    assert set(fields["fields"]) == {"status"} and fields["fields"]["status"]["statusCategory"]["key"] == "new"
    wrong_token = jira(js, "POST", "search/jql", json={"jql": "project = OPS", "nextPageToken": token})
    assert wrong_token.status_code == 400


def test_jira_transitions_are_named_apart_from_statuses(jira_standin):
    js = jira_standin
    js.admin.seed([{"title": "One"}])
    offered = jira(js, "GET", "issue/SHOP-1/transitions").json()["transitions"]
    assert [(t["name"], t["to"]["name"]) for t in offered] == [("Start Progress", "In Progress"), ("Resolve", "Done")]
    assert jira(js, "POST", "issue/SHOP-1/transitions", json={"transition": {"id": "61"}}).status_code == 400  # Reopen
    assert jira(js, "POST", "issue/SHOP-1/transitions", json={"transition": {"id": "99"}}).status_code == 400
    start = next(t["id"] for t in offered if t["to"]["name"] == "In Progress")
    done = jira(js, "POST", "issue/SHOP-1/transitions", json={"transition": {"id": start}})
    assert done.status_code == 204 and done.content == b""
    now = jira(js, "GET", "issue/SHOP-1/transitions").json()["transitions"]
    assert {t["to"]["name"] for t in now} == {"In Review", "Done", "To Do"}
    issue = js.admin.issue("SHOP-1")
    assert issue["state"] == "In Progress" and issue["history"][0]["by"] == "api"
    assert jira(js, "GET", "issue/SHOP-9/transitions").status_code == 404


def test_jira_comments_must_be_adf(jira_standin):
    js = jira_standin
    js.admin.seed([{"title": "One", "comments": [f"old {n}" for n in range(60)]}])
    refused = {
        "a plain string": "Landed abc123",
        "no version": {"type": "doc", "content": []},
        "an empty text node": adf(""),
        "text straight in the doc": {"type": "doc", "version": 1, "content": [{"type": "text", "text": "x"}]},
        "an empty document": {"type": "doc", "version": 1, "content": []},
    }
    for what, body in refused.items():
        response = jira(js, "POST", "issue/SHOP-1/comment", json={"body": body})
        assert response.status_code == 400, what
        assert set(response.json()) == {"errorMessages", "errors"}, what
    created = jira(js, "POST", "issue/SHOP-1/comment", json={"body": adf("Landed abc123")})
    assert created.status_code == 201 and created.json()["body"] == adf("Landed abc123")
    first = jira(js, "GET", "issue/SHOP-1/comment").json()
    assert first["total"] == 61 and len(first["comments"]) == 50 and first["startAt"] == 0
    rest = jira(js, "GET", "issue/SHOP-1/comment", params={"startAt": 50, "maxResults": 50}).json()
    assert rest["comments"][-1]["body"] == adf("Landed abc123")
    assert js.admin.issue("SHOP-1")["comments"][-1]["body"] == "Landed abc123"


def test_jira_issue_bulkfetch_and_statuses(jira_standin):
    js = jira_standin
    js.admin.seed([{"title": "One", "description": "First line\nsecond\n\nNext paragraph"}, {"title": "Two", "state": "Done"}])
    issue = jira(js, "GET", "issue/SHOP-1", params={"fields": "summary,description"}).json()
    assert issue["key"] == "SHOP-1" and set(issue["fields"]) == {"summary", "description"}
    assert issue["fields"]["description"]["type"] == "doc"
    missing = jira(js, "GET", "issue/SHOP-99")
    assert missing.status_code == 404 and missing.json()["errorMessages"]
    bulk = jira(js, "POST", "issue/bulkfetch", json={"issueIdsOrKeys": ["SHOP-2", "10001", "SHOP-99"],
                                                     "fields": ["status"]}).json()
    assert [(i["key"], i["fields"]["status"]["name"]) for i in bulk["issues"]] == [("SHOP-2", "Done"), ("SHOP-1", "To Do")]
    assert [e["id"] for e in bulk["issueErrors"]] == ["SHOP-99"]
    assert jira(js, "POST", "issue/bulkfetch", json={"issueIdsOrKeys": ["SHOP-1"], "startAt": 0}).status_code == 400
    statuses = jira(js, "GET", "project/SHOP/statuses").json()
    assert [t["name"] for t in statuses] == ["Task", "Bug"]
    assert [s["name"] for s in statuses[0]["statuses"]] == ["To Do", "In Progress", "In Review", "Done"]
    assert jira(js, "GET", "project/NOPE/statuses").status_code == 404


def test_jira_rate_limits_outages_and_stats(jira_standin):
    js = jira_standin
    js.admin.fail("rate_limit", count=1, retry_after=3)
    limited = jira(js, "GET", "myself")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
    assert limited.json()["errorMessages"]
    assert jira(js, "GET", "myself").status_code == 200
    js.admin.fail("outage", seconds=60)
    assert jira(js, "GET", "myself").status_code == 503
    js.admin.fail("none")
    assert jira(js, "GET", "myself").status_code == 200
    assert js.admin.stats() == {"calls": 4, "by_operation": {"myself": 4}}
    token = base64.b64encode(f"{js.email}:{js.api_token}".encode()).decode()
    assert httpx.get(f"{js.url}/rest/api/3/myself", headers={"Authorization": f"Basic {token}"}).status_code == 200


@pytest.mark.parametrize("kind", ["linear", "jira"])
def test_admin_seeds_in_bulk(kind, request):
    standin = request.getfixturevalue(f"{kind}_standin")
    created = standin.admin.seed([{"title": f"Issue {n}"} for n in range(1000)])
    assert len(created) == 1000 and len({c["id"] for c in created}) == 1000
    assert len(standin.admin.issues()) == 1000
    assert standin.admin.stats()["calls"] == 0  # the admin API is not counted
