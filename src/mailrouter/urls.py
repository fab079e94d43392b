"""URLs of django-mailrouter: ``path("mailrouter/", include("mailrouter.urls"))``.

- ``status/<alias>/<token>/``: the status page webhook, token in the path;
- ``status/<alias>/``: the same with the token as HTTP basic auth password.

Each is also answered without its trailing slash, so a subscription typed
without it works (rather than meeting APPEND_SLASH's redirect of a POST).
See ``mailrouter.views``.
"""

from django.urls import path

from .views import status_webhook

app_name = "mailrouter"
urlpatterns = [
    path("status/<str:alias>/<str:token>/", status_webhook, name="status-webhook"),
    path("status/<str:alias>/<str:token>", status_webhook),
    path("status/<str:alias>/", status_webhook, name="status-webhook-basic"),
    path("status/<str:alias>", status_webhook),
]
