"""URLconf of the webhook tests: mailrouter's URLs where the README puts them."""

from django.urls import include, path

urlpatterns = [path("mailrouter/", include("mailrouter.urls"))]
