"""wslink's ProcessLauncher from a page of this site: it sends its headers only on
``start()``, so ``fetchConnection`` and ``stop`` must work with the login cookie alone.
The page makes the very requests ProcessLauncher makes (XMLHttpRequest, JSON response
type, no header of its own on GET and DELETE)."""

import pytest

pytestmark = pytest.mark.e2e

PROCESS_LAUNCHER_CALLS = """async (endPoint) => {
  // ProcessLauncher.start / fetchConnection / stop, as wslink writes them
  const call = (method, url, body) => new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url, true);
    xhr.responseType = 'json';
    xhr.onload = () => resolve({status: xhr.status, response: xhr.response});
    xhr.onerror = () => resolve({status: 'network error'});
    xhr.send(body);
  });
  const started = await call('POST', endPoint, JSON.stringify({application: 'quick'}));
  const id = started.response && started.response.id;
  const fetched = await call('GET', [endPoint, id].join('/'));
  const stopped = await call('DELETE', [endPoint, id].join('/'));
  const gone = await call('GET', [endPoint, id].join('/'));
  return {started, fetched, stopped, gone};
}"""


def test_process_launcher_requests_from_a_logged_in_page(ui_server, page_for):
    page = page_for(ui_server)
    out = page.evaluate(PROCESS_LAUNCHER_CALLS, ui_server.url + "/paraview")
    started, fetched = out["started"], out["fetched"]
    assert started["status"] == 200, started
    assert started["response"]["sessionURL"].startswith("ws://localhost:")
    assert fetched["status"] == 200, fetched
    assert fetched["response"]["id"] == started["response"]["id"]
    assert fetched["response"]["sessionURL"] == started["response"]["sessionURL"]
    assert out["stopped"]["status"] == 200, out["stopped"]
    assert out["gone"]["status"] == 404, out["gone"]


def test_a_page_without_login_gets_401(ui_server, browser):
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(ui_server.url + "/accounts/login/")
        out = page.evaluate(PROCESS_LAUNCHER_CALLS, ui_server.url + "/paraview")
        assert out["started"]["status"] == 401
        assert out["fetched"]["status"] == 401
    finally:
        context.close()
