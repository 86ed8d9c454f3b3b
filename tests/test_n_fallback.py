"""Servers that ignore `n` (llama-cpp-python's, Anthropic's through litellm): the client asks the missing samples
one request each (seed + i when seeded) and remembers, per target, to skip the `n` attempt afterwards.

The provider is research_kit.testing.ScriptedServer with ignore_n=True: it answers one choice whatever `n` asks,
and records every request body, so the tests can count requests and read their seeds.
"""
from research_kit.client import InferenceAPI
from research_kit.testing import ScriptedServer


def seeded(body):
    return f"sample with seed {body.get('seed')}"


def test_first_call_asks_the_missing_samples_then_the_target_is_remembered(tmp_path):
    api = InferenceAPI(cache_dir=tmp_path / "cache")
    with ScriptedServer(ignore_n=True, reply=seeded) as srv:
        first = api.call("openai/m", "Name a colour.", n=3, seed=10, **srv.params)
        # 1 request with n=3 (answered with one choice) + 2 requests for the missing samples = 3, no retries
        assert srv.requests == 3 and dict(srv.counts) == {"ok": 3}
        bodies = list(srv.bodies)
        assert bodies[0]["n"] == 3 and [b.get("n") for b in bodies[1:]] == [None, None]
        assert sorted(b["seed"] for b in bodies) == [10, 11, 12]  # seed + i, as the local model does for sample i
        assert [r.completion for r in first] == [f"sample with seed {s}" for s in (10, 11, 12)]  # 3 distinct samples

        srv.reset_counts()
        second = api.call("openai/m", "Name a fruit.", n=3, seed=10, **srv.params)
        # remembered for this target: exactly 3 single requests, no wasted n=3 attempt
        assert srv.requests == 3 and all("n" not in b for b in srv.bodies)
        assert sorted(b["seed"] for b in srv.bodies) == [10, 11, 12]
        assert len({r.completion for r in second}) == 3

        srv.reset_counts()
        again = api.call("openai/m", "Name a colour.", n=3, seed=10, **srv.params) + \
            api.call("openai/m", "Name a fruit.", n=3, seed=10, **srv.params)
        assert srv.requests == 0 and all(r.cached for r in again)  # each sample cached under its index
        assert [r.completion for r in again] == [r.completion for r in first + second]
    assert api.model_calls == 6
    log = api.usage_log()
    assert log["source"].value_counts().to_dict() == {"model": 6, "cache": 6}


def test_unseeded_calls_and_batches_cost_one_request_per_sample(tmp_path):
    api = InferenceAPI(cache_dir=tmp_path / "cache")
    with ScriptedServer(ignore_n=True) as srv:
        r = api.call("openai/m", "hello", n=3, temperature=1.0, **srv.params)
        assert [x.completion for x in r] == ["hello"] * 3 and srv.requests == 3
        assert all("seed" not in b for b in srv.bodies)  # no seed asked, none invented
        srv.reset_counts()
        # concurrent prompts: however many start with an n=2 request before the first reply, each costs 2 requests
        res = api.batch([f"p{i}" for i in range(8)], "openai/m", n=2, temperature=1.0, progress=False, **srv.params)
        assert [[x.completion for x in s] for s in res] == [[f"p{i}"] * 2 for i in range(8)]
        assert srv.requests == 16 and dict(srv.counts) == {"ok": 16}


def test_a_server_that_honours_n_gets_one_request(tmp_path):
    api = InferenceAPI(cache_dir=tmp_path / "cache")
    with ScriptedServer() as srv:
        r = api.call("openai/m", "hello", n=3, seed=10, **srv.params)
        assert len(r) == 3 and srv.requests == 1 and srv.bodies[0]["n"] == 3
