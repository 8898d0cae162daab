from support import make_repo
from backend.store import TaskStore

BAD = ["runtime: [\n", "runtime: nope\n", "- a\n", "opencode:\n  command: rel/x\n", "\xff".encode("latin-1"), "a: " + "[" * 5000 + "]" * 5000 + "\n", None]

def test_probe(dashboard_factory, tmp_path):
    projects = []
    for i, text in enumerate(BAD):
        local = make_repo(tmp_path, f"p{i}")
        if text is None:
            (local / "agent.yaml").mkdir()
        elif isinstance(text, bytes):
            (local / "agent.yaml").write_bytes(text)
        else:
            (local / "agent.yaml").write_text(text)
        TaskStore(local / "data" / "dev-tasks.json").initialize()
        projects.append({"id": f"p{i}", "path": str(local)})
    client = dashboard_factory(projects, timeout=5)
    for i in range(len(BAD)):
        r = client.get(f"/api/projects/p{i}/runtimes")
        print(i, r.status_code, r.text[:160])
        r2 = client.post(f"/api/projects/p{i}/tasks", json={"title": "t", "runtime": "opencode"})
        print(i, r2.status_code, r2.text[:160])
