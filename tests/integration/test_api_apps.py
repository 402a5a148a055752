"""Apps of the Python API (``ApplicationDefinition``) on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from balsam.api import use_backend
from balsam.backends.local import LocalBackend
from balsam.core.models import ApplicationDefinition, BalsamJob
from balsam.errors import AlreadyExists, Ambiguous, InvalidTransition, NotFound, ValidationError


@pytest.fixture
def api(backend: LocalBackend) -> Iterator[LocalBackend]:
    """The test's backend, injected into the API."""
    with use_backend(backend):
        yield backend


def make(name: str, executable: str = "echo hello,", **fields: str) -> ApplicationDefinition:
    """A saved app."""
    app = ApplicationDefinition(name=name, executable=executable, **fields)
    app.save()
    return app


def test_create_and_read_back(api: LocalBackend) -> None:
    app = ApplicationDefinition(
        name="Sim",
        executable="/opt/sim/bin/sim --fast",
        description="the simulation",
        preprocess="python prep.py",
        postprocess="python post.py",
        envscript="/opt/sim/env.sh",
    )
    assert app.pk is None
    app.save()
    assert app.pk is not None and app.id == app.pk
    stored = ApplicationDefinition.objects.get(name="Sim")
    assert stored == app
    assert (stored.executable, stored.preprocess, stored.postprocess, stored.envscript) == (
        "/opt/sim/bin/sim --fast",
        "python prep.py",
        "python post.py",
        "/opt/sim/env.sh",
    )
    assert api.get_app("Sim").description == "the simulation"
    assert str(stored) == "Sim: /opt/sim/bin/sim --fast"
    assert repr(stored) == "<App name='Sim' executable='/opt/sim/bin/sim --fast'>"


def test_manager_queries(api: LocalBackend) -> None:
    for name in ("alpha", "beta", "gamma"):
        make(name, executable=f"/bin/{name}")
    objects = ApplicationDefinition.objects
    assert [a.name for a in objects.all()] == ["alpha", "beta", "gamma"]
    assert [a.name for a in objects.order_by("-name")] == ["gamma", "beta", "alpha"]
    assert [a.name for a in objects.filter(name__in=["beta", "gamma"])] == ["beta", "gamma"]
    assert [a.name for a in objects.exclude(executable__endswith="a")] == []
    assert objects.filter(name__startswith="g").count() == 1 and objects.count() == 3
    assert objects.filter(executable__icontains="BETA").get().name == "beta"
    assert objects.values_list("name", flat=True) == ["alpha", "beta", "gamma"]
    assert objects.order_by("-name")[0].name == "gamma"
    assert [a.name for a in objects.order_by("-name")[1:]] == ["beta", "alpha"]
    first = objects.first()
    assert first is not None and first.name == "alpha"
    assert objects.filter(name="none").first() is None and not objects.filter(name="none")
    assert len(objects.all()) == 3 and objects.exists()


def test_get_errors(api: LocalBackend) -> None:
    make("alpha")
    make("beta")
    with pytest.raises(ApplicationDefinition.DoesNotExist, match="no application matches"):
        ApplicationDefinition.objects.get(name="missing")
    with pytest.raises(NotFound):
        ApplicationDefinition.objects.get(name="missing")
    with pytest.raises(Ambiguous, match="more than one application"):
        ApplicationDefinition.objects.get(executable="echo hello,")
    with pytest.raises(ValidationError, match="'colour'"):
        ApplicationDefinition.objects.filter(colour="red")


def test_update_through_save(api: LocalBackend) -> None:
    app = make("Sim")
    app.executable = "/usr/bin/sim"
    app.postprocess = "python post.py"
    app.save()
    assert api.get_app("Sim").executable == "/usr/bin/sim"
    assert api.get_app("Sim").postprocess == "python post.py"
    app.name = "Renamed"
    with pytest.raises(ValidationError, match="cannot be renamed"):
        app.save()
    app.refresh_from_db()
    assert app.name == "Sim"


def test_bad_input_is_refused(api: LocalBackend) -> None:
    make("Sim")
    with pytest.raises(AlreadyExists, match="'Sim' exists already"):
        make("Sim")
    with pytest.raises(ValidationError, match=r"unknown app field.*exe"):
        ApplicationDefinition(name="x", exe="/bin/true")
    with pytest.raises(ValidationError, match="executable"):
        make("Empty", executable="")
    with pytest.raises(ValidationError, match="name"):
        make("has space")
    app = ApplicationDefinition.objects.get(name="Sim")
    with pytest.raises(ValidationError, match="'exe' is not an app field"):
        app.exe = "x"  # type: ignore[attr-defined]
    app.executable = "'unbalanced"
    with pytest.raises(ValidationError, match="executable"):
        app.save()
    assert api.get_app("Sim").executable == "echo hello,"
    assert ApplicationDefinition.objects.count() == 1


def test_delete(api: LocalBackend) -> None:
    make("used")
    make("unused")
    make("other")
    BalsamJob(name="j", application="used").save()
    with pytest.raises(InvalidTransition, match=r"job.*use app 'used'"):
        ApplicationDefinition.objects.get(name="used").delete()
    assert ApplicationDefinition.objects.filter(name__in=["unused", "other"]).delete() == 2
    assert ApplicationDefinition.objects.values_list("name", flat=True) == ["used"]
    BalsamJob.objects.all().delete()
    app = ApplicationDefinition.objects.get(name="used")
    app.delete()
    assert app.pk is None and ApplicationDefinition.objects.count() == 0
    with pytest.raises(ApplicationDefinition.DoesNotExist):
        ApplicationDefinition.objects.get(name="used")


def test_get_or_create(api: LocalBackend) -> None:
    app, created = ApplicationDefinition.objects.get_or_create(name="Sim", executable="/bin/sim")
    assert created and app.pk is not None
    again, created = ApplicationDefinition.objects.get_or_create(name="Sim", executable="/x")
    assert not created and again == app and again.executable == "/bin/sim"
    assert ApplicationDefinition.objects.create(name="B", executable="/bin/b").pk is not None
