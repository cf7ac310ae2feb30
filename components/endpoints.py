"""The one client for every OpenAI-compatible endpoint Ratchet calls (remote judges, vLLM servers, their checks
before a run): the `openai` package's. It retries connection errors, timeouts, 408, 409, 429 (after the
Retry-After the server names) and 5xx with backoff, and raises typed errors; `calling` turns them into one
EndpointError line that names the URL and what went wrong, never the key.

The key is read once, from the environment variable a config names, into the client, which sends it as the
Authorization header and nowhere else.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING

from components.progress import progress

if TYPE_CHECKING:
    import openai  # imported where a client is made: 0.6 s a process that never calls an endpoint (most runs)

NO_KEY = "no-key"  # the client needs a key; a server without one ignores the header


class EndpointError(RuntimeError):
    """The endpoint refused, could not be reached after the allowed retries, or sent a reply that is not one."""


def api_key(env_var: str) -> str:
    key = os.environ.get(env_var)
    if not key:
        raise EndpointError(f"the API key variable {env_var} is not set in the environment")
    return key


def client(base_url: str, api_key_env: str | None, timeout: float, max_retries: int) -> openai.OpenAI:
    import openai

    key = api_key(api_key_env) if api_key_env else NO_KEY
    return openai.OpenAI(base_url=base_url.rstrip("/"), api_key=key, timeout=timeout, max_retries=max_retries)


@contextmanager
def calling(endpoint: openai.OpenAI, what: str) -> Iterator[None]:
    """Errors of the calls made inside, as EndpointError lines: `what` at the endpoint's URL, then why."""
    import openai

    url, attempts = str(endpoint.base_url).rstrip("/"), endpoint.max_retries + 1
    try:
        yield
    except openai.APIStatusError as err:  # not retried (4xx), or still failing after the retries (429, 5xx)
        said = str((err.body.get("message") if isinstance(err.body, dict) else None) or err.response.text)
        raise EndpointError(f"{what} at {url}: HTTP {err.status_code}: {said[:200]}") from None
    except openai.APITimeoutError:
        raise EndpointError(f"{what} at {url}: no answer within {endpoint.timeout} s ({attempts} attempts)") from None
    except openai.APIConnectionError as err:
        cause = type(err.__cause__).__name__ if err.__cause__ else "connection error"
        raise EndpointError(f"{what} at {url}: cannot reach it ({cause}; {attempts} attempts)") from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:  # a body that is not the API's
        raise EndpointError(f"{what} at {url}: the reply is not an OpenAI-compatible one ({err})") from None


def post(endpoint: openai.OpenAI, path: str, body: dict) -> None:
    """POST to a path the client has no method for (vLLM's adapter loading), with the client's retries."""
    endpoint.post(path, cast_to=str, body=body)  # vLLM answers these in plain text


def each(calls_at_once: int, call: Callable, items: list, desc: str, unit: str) -> list:
    """`call` on every item, at most `calls_at_once` in flight, in order, with a progress bar; after the first
    error no further call starts, and that error is raised."""
    failed = threading.Event()

    def guarded(item):
        if failed.is_set():
            return None  # never read: the error is raised first
        try:
            return call(item)
        except BaseException:
            failed.set()
            raise

    with ThreadPoolExecutor(calls_at_once) as pool:
        futures = [pool.submit(guarded, item) for item in items]
        return [f.result() for f in progress(futures, desc, unit)]
