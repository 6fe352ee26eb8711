"""deploy/providers/vast/registry.py against a real registry server (Debian's docker-registry) on 127.0.0.1.

Images are pushed through the registry's own HTTP API (tests/deploy/registry_server.py); the
registry then answers exactly as it would answer `docker pull`: manifests by media type, the
paginated tag list, 401 challenges for htpasswd (Basic) and token (Bearer) auth.
"""

from __future__ import annotations

import os

import pytest

from deploy.providers.vast import registry
from tests.deploy.registry_server import RegistryServer, push_image

TF_TAGS = ["2.19.0-cuda-12.4.1", "2.16.1-cuda-12.4.1", "latest"]  # the vendor's tags seen in public references


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """HTTP, no auth: vastai/tensorflow's public tags as an OCI index (amd64 + arm64), one Docker v2 image."""
    reg = RegistryServer(tmp_path_factory.mktemp("registry-plain")).start()
    reg.pushed = {}
    base_layers = [os.urandom(3000), os.urandom(5000)]
    reg.pushed["base"] = push_image(reg.url, "vastai/base-image", "cuda-12.4.1-cudnn-devel-ubuntu22.04", base_layers)
    for tag in TF_TAGS:  # FROM the base: its layers first, then the TensorFlow layers
        reg.pushed[tag] = push_image(reg.url, "vastai/tensorflow", tag, base_layers + [os.urandom(7000), os.urandom(11)],
                                     index=True, arm_layers=[os.urandom(999)])
    reg.pushed["docker"] = push_image(reg.url, "you/trainer", "1.0", [os.urandom(1234)], oci=False)
    yield reg
    reg.stop()


def test_an_oci_index_is_read_for_its_linux_amd64_layers(plain):
    facts = registry.lookup(f"{plain.host}/vastai/tensorflow:2.19.0-cuda-12.4.1")
    assert facts.exists is True, facts.problem
    assert facts.layers == plain.pushed["2.19.0-cuda-12.4.1"]["layers"]  # amd64's, not the first entry (arm64)
    assert facts.compressed_bytes == 3000 + 5000 + 7000 + 11


def test_a_docker_v2_manifest_is_read_too(plain):
    facts = registry.lookup(f"{plain.host}/you/trainer:1.0")
    assert facts.exists is True and facts.compressed_bytes == 1234


def test_a_missing_tag_names_the_closest_existing_ones(plain):
    facts = registry.lookup(f"{plain.host}/vastai/tensorflow:2.19.0")
    assert facts.exists is False
    assert "no tag '2.19.0'" in facts.problem
    assert facts.near_tags[0] == "2.19.0-cuda-12.4.1"
    assert set(facts.near_tags) == set(TF_TAGS)
    # the README's old default: no such tag, and the same major version comes first
    facts = registry.lookup(f"{plain.host}/vastai/tensorflow:2.21.0")
    assert facts.exists is False and facts.near_tags[:2] == ["2.19.0-cuda-12.4.1", "2.16.1-cuda-12.4.1"]


def test_a_missing_repository_is_said_as_such(plain):
    facts = registry.lookup(f"{plain.host}/nobody/nothing:1")
    assert facts.exists is False and "repository nobody/nothing does not exist" in facts.problem


def test_an_unreachable_registry_is_unknown_not_missing(tmp_path):
    from tests.deploy.registry_server import free_port

    facts = registry.lookup(f"127.0.0.1:{free_port()}/a/b:1")
    assert facts.exists is None and "cannot reach" in facts.problem


def test_reserved_example_names_are_never_asked():
    facts = registry.lookup("registry.example/violence-trainer:1.0")
    assert facts.exists is None and "not looked up" in facts.problem


def test_docker_hub_names_resolve_like_docker():
    assert registry.endpoint("vastai/tensorflow:2.19.0-cuda-12.4.1", env={}) == (
        "registry-1.docker.io", "vastai/tensorflow", "2.19.0-cuda-12.4.1")
    assert registry.endpoint("ubuntu", env={}) == ("registry-1.docker.io", "library/ubuntu", "latest")
    assert registry.endpoint("ghcr.io/you/img:2", env={}) == ("ghcr.io", "you/img", "2")
    assert registry.endpoint("localhost:5000/t", env={}) == ("localhost:5000", "t", "latest")
    mapped = {"DEPLOY_REGISTRY_MAP": "docker.io=127.0.0.1:5000 ghcr.io=127.0.0.1:5001"}
    assert registry.endpoint("ubuntu:22.04", env=mapped) == ("127.0.0.1:5000", "library/ubuntu", "22.04")
    assert registry.endpoint("ghcr.io/you/img:2", env=mapped) == ("127.0.0.1:5001", "you/img", "2")
    assert registry.is_loopback("127.0.0.1:5000") and registry.is_loopback("localhost:5000")
    assert registry.is_loopback("[::1]:5000") and not registry.is_loopback("ghcr.io")


def test_the_pull_of_a_vendor_image_counts_only_the_layers_above_vastai_base_image(plain):
    facts = registry.lookup(f"{plain.host}/vastai/tensorflow:2.19.0-cuda-12.4.1")
    asked = []

    def base_lookup(ref):  # the vendor's base, served by the same local registry
        asked.append(ref)
        return registry.lookup(f"{plain.host}/{ref}")

    est = registry.pull_estimate("vastai/tensorflow:2.19.0-cuda-12.4.1", facts=facts, base_lookup=base_lookup)
    assert asked[0] == "vastai/base-image:cuda-12.4.1-cudnn-devel-ubuntu22.04"
    assert est.bytes == 7000 + 11  # the TensorFlow layers; the base's 8000 bytes are cached on the hosts
    assert "2 of 4 layers" in est.how
    # an image of ours is pulled whole
    ours = registry.pull_estimate(f"{plain.host}/you/trainer:1.0")
    assert ours.bytes == 1234


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory, plain):
    """HTTPS + token auth (the Docker Hub / GHCR flow) over the same storage; `you/private` needs a login."""
    reg = RegistryServer(tmp_path_factory.mktemp("registry-token"), storage=plain.storage, auth="token",
                         private={"you/trainer"}).start()
    yield reg
    reg.stop()


def test_the_anonymous_bearer_token_flow_like_docker_hub(token_registry, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(token_registry.cert))
    facts = registry.lookup(f"{token_registry.host}/vastai/tensorflow:2.19.0-cuda-12.4.1")
    assert facts.exists is True and facts.compressed_bytes == 3000 + 5000 + 7000 + 11, facts.problem
    asked = token_registry.token.requests[-1]
    assert asked["scope"] == ["repository:vastai/tensorflow:pull"] and asked["service"] == ["test-registry"]
    assert asked["user"] == ""  # anonymous
    missing = registry.lookup(f"{token_registry.host}/vastai/tensorflow:2.21.0")
    assert missing.exists is False and missing.near_tags[0] == "2.19.0-cuda-12.4.1"


def test_a_private_image_needs_image_login_and_works_with_it(token_registry, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(token_registry.cert))
    anon = registry.lookup(f"{token_registry.host}/you/trainer:1.0")
    assert anon.exists is False and "private: set vast.image_login" in anon.problem
    login = {"username": "reader", "password_env": "REG_TOKEN"}
    facts = registry.lookup(f"{token_registry.host}/you/trainer:1.0", login, env={"REG_TOKEN": "s3cret-pass"})
    assert facts.exists is True and facts.compressed_bytes == 1234, facts.problem
    assert token_registry.token.requests[-1]["user"] == "reader"
    unset = registry.lookup(f"{token_registry.host}/you/trainer:1.0", login, env={})
    assert unset.exists is None and "$REG_TOKEN is not set" in unset.problem


def test_basic_auth_registry_with_image_login(tmp_path, plain, monkeypatch):
    reg = RegistryServer(tmp_path, storage=plain.storage, auth="basic").start()
    try:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(reg.cert))
        anon = registry.lookup(f"{reg.host}/you/trainer:1.0")
        assert anon.exists is False and "image_login" in anon.problem
        facts = registry.lookup(f"{reg.host}/you/trainer:1.0", {"username": "reader", "password_env": "P"},
                                env={"P": "s3cret-pass"})
        assert facts.exists is True and facts.compressed_bytes == 1234, facts.problem
        wrong = registry.lookup(f"{reg.host}/you/trainer:1.0", {"username": "reader", "password_env": "P"},
                                env={"P": "wrong"})
        assert wrong.exists is False
    finally:
        reg.stop()


def test_closest_tags_order():
    tags = ["latest", "2.16.1-cuda-12.4.1", "2.19.0-cuda-12.4.1", "2.19.0-cuda-12.1.1", "1.15"]
    assert registry.closest_tags("2.19.0-cuda-12.4.1-x", tags)[0] == "2.19.0-cuda-12.4.1"
    assert registry.closest_tags("2.19", tags)[:2] == ["2.19.0-cuda-12.4.1", "2.19.0-cuda-12.1.1"]
    assert registry.closest_tags("lates", tags)[0] == "latest"
    assert registry.closest_tags("x", []) == []
