from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from zephserver.web import views

# The apps' admin modules, which the admin app does not load at start (SimpleAdminConfig):
# the daemon loads this file with the first web request, a node used only through the
# API never.
admin.autodiscover()

urlpatterns = [
    path("", views.index, name="index"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password_change/", auth_views.PasswordChangeView.as_view(),
         name="password_change"),
    path("accounts/password_change/done/", auth_views.PasswordChangeDoneView.as_view(),
         name="password_change_done"),
    path("admin/", admin.site.urls),
]
