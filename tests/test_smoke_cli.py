"""End-to-end: the real CLI crawls the replica into a real SQLite file."""

from tests.conftest import replica_config


def test_crawl_stores_every_replica_article_once(replica, workspace):
    workspace.write_config(replica_config(replica))
    result = workspace.run("crawl", "--json")
    assert result.returncode == 0, result.stderr
    db = workspace.db()
    assert db["articles"].count == 25 + 12
    assert db.execute("select count(distinct url) from articles").fetchone()[0] == 37
