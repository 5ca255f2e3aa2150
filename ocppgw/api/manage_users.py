"""``/gateways/ocpp/authentication/users`` and ``import_users``: the built-in database's users
(contract A.2 "User REST bodies", B.3) in ``<data_dir>/users.sqlite``, through ``UserStore``.

New passwords are hashed with the ``[authentication]`` hashing settings, as ``ocppgw users`` does.
The import takes the reference's CSV or JSON file (multipart field ``filename``), hashed as the
reference's gateway endpoint, or clear text with ``?type=plain``.
"""

from __future__ import annotations

import email.parser
import email.policy
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path, PurePath
from typing import Any

from ocppgw.api.http import ApiError, ApiRequest, ApiResponse, Route, bad_request, paginate
from ocppgw.api.manage_common import ManageContext, object_body
from ocppgw.auth.hashing import HashSettings, generate
from ocppgw.auth.users import User, UserExists, UserStore
from ocppgw.auth.users_import import ImportFileError, read_entries, to_users

_NOT_FOUND = ApiError(404, "NOT_FOUND", "User not found")


def _user(user: User) -> dict[str, Any]:
    return {"user_id": user.user_id, "is_superuser": user.is_superuser}


def _superuser(body: dict[str, Any]) -> bool | None:
    value = body.get("is_superuser")
    if value is not None and not isinstance(value, bool):
        raise bad_request("is_superuser: expected true or false")
    return value


def _password(body: dict[str, Any]) -> str | None:
    value = body.get("password")
    if value is not None and (not isinstance(value, str) or not value):
        raise bad_request("password: expected non-empty text")
    return value


def multipart_file(request: ApiRequest, field: str) -> tuple[str, bytes]:
    """The file name and content of multipart form field ``field``; 400 when it is not there."""
    if not request.content_type.lower().startswith("multipart/form-data"):
        raise bad_request(f"Missing required parameter: {field}")
    head = f"Content-Type: {request.content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request.raw_body)
    for part in message.iter_parts() if message.is_multipart() else ():
        if part.get_param("name", header="content-disposition") == field:
            name = part.get_filename() or ""
            return PurePath(name).name, part.get_payload(decode=True) or b""
    raise bad_request(f"Missing required parameter: {field}")


class UserEndpoints:
    def __init__(self, context: ManageContext) -> None:
        self.context = context

    @contextmanager
    def store(self) -> Iterator[tuple[UserStore, HashSettings]]:
        """The users table and hashing settings; 404 without an authenticator, 400 when it is not
        the built-in database (the reference's codes)."""
        config = self.context.service.config
        section = config.authentication
        if section is None:
            raise ApiError(404, "NOT_FOUND", "Resource not found. path: gateway.ocpp.authentication")
        if section.backend != "built_in_database":
            raise bad_request("User error: unsupported_operation")
        store = UserStore(config.gateway.data_dir)
        try:
            yield store, HashSettings.of(section)
        finally:
            store.close()

    def list(self, request: ApiRequest) -> ApiResponse:
        like = request.arg("like_user_id")
        superuser = request.arg("is_superuser")
        if superuser not in (None, "true", "false"):
            raise bad_request("is_superuser: expected true or false")
        with self.store() as (store, _):
            users = store.list()
        if like is not None:
            users = [u for u in users if like in u.user_id]
        if superuser is not None:
            users = [u for u in users if u.is_superuser == (superuser == "true")]
        return ApiResponse(200, paginate([_user(u) for u in users], request, count=like is None))

    def create(self, request: ApiRequest) -> ApiResponse:
        body = object_body(
            request.body, frozenset({"user_id", "password", "is_superuser", "namespace"}), "user"
        )
        user_id, password = body.get("user_id"), _password(body)
        if not isinstance(user_id, str) or not user_id:
            raise bad_request("Missing required parameter: user_id")
        if password is None:
            raise bad_request("Missing required parameter: password")
        if body.get("namespace") not in (None, ""):
            raise bad_request("namespace: only the global namespace exists in the gateway")
        superuser = bool(_superuser(body))
        with self.store() as (store, settings):
            password_hash, salt = generate(settings, password.encode("utf-8"))
            try:
                store.add(User(user_id, password_hash, salt, superuser))
            except UserExists:
                raise ApiError(409, "ALREADY_EXISTS", "User already exists") from None
        return ApiResponse(201, {"user_id": user_id, "is_superuser": superuser, "namespace": None})

    def get(self, request: ApiRequest) -> ApiResponse:
        with self.store() as (store, _):
            user = store.get(request.path_params["user_id"])
        if user is None:
            raise _NOT_FOUND
        return ApiResponse(200, _user(user))

    def update(self, request: ApiRequest) -> ApiResponse:
        body = object_body(request.body, frozenset({"password", "is_superuser"}), "user")
        password, superuser = _password(body), _superuser(body)
        if password is None and superuser is None:
            raise bad_request("Missing required parameter: password")
        with self.store() as (store, settings):
            user = store.get(request.path_params["user_id"])
            if user is None:
                raise _NOT_FOUND
            password_hash, salt = user.password_hash, user.salt
            if password is not None:
                password_hash, salt = generate(settings, password.encode("utf-8"))
            flag = user.is_superuser if superuser is None else superuser
            store.import_users([User(user.user_id, password_hash, salt, flag)])
        return ApiResponse(200, {"user_id": user.user_id, "is_superuser": flag})

    def delete(self, request: ApiRequest) -> ApiResponse:
        with self.store() as (store, _):
            if not store.delete(request.path_params["user_id"]):
                raise _NOT_FOUND
        return ApiResponse(204)

    def import_users(self, request: ApiRequest) -> ApiResponse:
        kind = request.arg("type") or "hash"
        if kind not in ("hash", "plain"):
            raise bad_request("type: expected hash or plain")
        name, data = multipart_file(request, "filename")
        suffix = PurePath(name).suffix
        with self.store() as (store, settings), tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / f"users{suffix}"
            path.write_bytes(data)
            try:
                entries = read_entries(path, kind == "plain", name)
            except ImportFileError as e:
                raise bad_request("; ".join(e.problems)) from None
            hasher: Callable[[bytes], tuple[str, str]] | None = None
            if kind == "plain":
                hasher = lambda password: generate(settings, password)  # noqa: E731
            counts = store.import_users(to_users(entries, hasher))
        return ApiResponse(200, asdict(counts))


def routes(context: ManageContext) -> list[Route]:
    e = UserEndpoints(context)
    users = "/gateways/ocpp/authentication/users"
    one = users + "/{user_id}"
    return [
        Route("GET", users, e.list, "Built-in users, paged", {200: "users", 400: "bad", 404: "none"}),
        Route("POST", users, e.create, "Add a user", {201: "added", 400: "bad", 409: "exists"}),
        Route("GET", one, e.get, "One user", {200: "user", 404: "not found"}),
        Route("PUT", one, e.update, "Change a user", {200: "changed", 400: "bad", 404: "not found"}),
        Route("DELETE", one, e.delete, "Delete a user", {204: "deleted", 404: "not found"}),
        Route(
            "POST",
            "/gateways/ocpp/authentication/import_users",
            e.import_users,
            "Import a CSV or JSON user file (multipart field filename)",
            {200: "counts", 400: "bad file"},
        ),
    ]
