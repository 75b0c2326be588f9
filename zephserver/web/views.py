"""Django views served on PORT_ZEPH beside /ws."""

import json

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


@login_required
def index(request: HttpRequest) -> HttpResponse:
    from django.conf import settings

    nodes = json.dumps(getattr(settings, "ZEPH_NODE_URLS", []))
    return render(request, "zephserver/index.html", {"node_urls": nodes})
