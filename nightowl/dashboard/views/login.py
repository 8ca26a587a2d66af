"""The login page and the plain pages for errors (404, 403, 429, 500)."""

from twisted.web.template import tags


def _frame(title, *body):
    return tags.html(lang="en")(
        tags.head(tags.meta(charset="utf-8"),
                  tags.meta(name="viewport", content="width=device-width, initial-scale=1"),
                  tags.title(title, " \u00b7 nightowl"),
                  tags.link(rel="stylesheet", href="/static/style.css"),
                  tags.link(rel="icon", href="data:,")),
        tags.body(class_="plain")(tags.div(class_="box")(tags.h1(title), *body)))


def login(csrf, message=None):
    form = tags.form(method="post", action="/login")(
        tags.input(type="hidden", name="csrf", value=csrf),
        tags.label("Password ", tags.input(type="password", name="password",
                                           autocomplete="current-password", required="required",
                                           autofocus="autofocus")),
        " ", tags.button("Log in", type="submit"))
    return _frame("nightowl", tags.p(message, class_="error") if message else "", form)


def error(title, message, back=True):
    return _frame(title, tags.p(message),
                  tags.p(tags.a("Back to the overview", href="/")) if back else "")
