"""URLs of django-mailrouter: ``path("mailrouter/", include("mailrouter.urls"))``.

- ``status/<alias>/<token>/``: the status page webhook (see ``mailrouter.views``).
"""

from django.urls import path

from .views import status_webhook

app_name = "mailrouter"
urlpatterns = [
    path("status/<str:alias>/<str:token>/", status_webhook, name="status-webhook"),
]
