"""The web UI's pages: Jinja2 templates rendered on the server (no script needed to use them).

Values reach the templates as text already made readable (:mod:`runtime._ui_views`,
:mod:`runtime._render`); Jinja2's autoescaping keeps whatever a user stored from being read as
HTML.
"""

from __future__ import annotations

from typing import Any

from jinja2 import DictLoader, Environment, select_autoescape

_BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{% block title %}{{ hub }}{% endblock %} · Ray Durable</title>
<style>
 body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
 header { background: #1d2330; color: #fff; padding: 10px 20px; display: flex; gap: 24px; align-items: baseline; }
 header a { color: #cfd8ff; text-decoration: none; } header b { font-size: 16px; }
 main { padding: 16px 20px; }
 table { border-collapse: collapse; width: 100%; background: #fff; margin-bottom: 16px; }
 th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #e3e6ea; vertical-align: top; }
 th { background: #eef0f4; font-weight: 600; }
 td.mono, span.mono { font-family: ui-monospace, monospace; font-size: 12.5px; word-break: break-all; }
 .status { padding: 1px 7px; border-radius: 9px; font-size: 12px; background: #e3e6ea; }
 .Running { background: #d8e8ff; } .Completed { background: #d4f3dc; } .Failed { background: #ffd9d6; }
 .Terminated { background: #f1d9ff; } .Suspended, .Pending { background: #fff1c2; }
 .notice { background: #fff1c2; padding: 6px 10px; margin-bottom: 12px; }
 .warn { background: #ffd9d6; padding: 6px 10px; margin-bottom: 12px; }
 form.filters { display: flex; gap: 8px; flex-wrap: wrap; margin-bottom: 12px; align-items: end; }
 form.filters label { display: flex; flex-direction: column; font-size: 12px; }
 .actions a, button { margin-right: 6px; }
 dl { display: grid; grid-template-columns: max-content auto; gap: 4px 16px; background: #fff; padding: 10px; }
 dt { font-weight: 600; } dd { margin: 0; }
 h2 { font-size: 16px; margin: 18px 0 8px; }
</style></head><body>
<header><b>Ray Durable</b><span>hub <b id="hub">{{ hub }}</b> ({{ mode }})</span>
 <a href="/instances">Instances</a><a href="/entities">Entities</a></header>
<main>
{% if not authenticated %}<div class="warn" id="no-auth">This page has no authentication: anyone who can reach
 {{ bind }} can read and change this hub.</div>{% endif %}
{% if read_only %}<div class="notice" id="read-only">Read-only: no hub named {{ hub }} runs, so this page reads
 its files; actions need the hub running (detached).</div>{% endif %}
{% if message %}<div class="notice" id="message">{{ message }}</div>{% endif %}
{% if error %}<div class="warn" id="error">{{ error }}</div>{% endif %}
{% block body %}{% endblock %}
</main></body></html>"""

_INSTANCES = """{% extends "base" %}{% block title %}Instances{% endblock %}{% block body %}
<form class="filters" method="get" action="/instances">
 <label>Status<select name="status"><option value="">any</option>
 {% for s in statuses %}<option {% if s == f.status %}selected{% endif %}>{{ s }}</option>{% endfor %}</select></label>
 <label>Name<input name="name" value="{{ f.name }}"></label>
 <label>Id prefix<input name="prefix" value="{{ f.prefix }}"></label>
 <label>Created from (1h, ISO)<input name="from" value="{{ f.created_from }}"></label>
 <label>Created to<input name="to" value="{{ f.created_to }}"></label>
 <label>Per page<input name="size" value="{{ f.size }}" size="4"></label>
 <button type="submit">Filter</button></form>
<table id="instances"><tr><th>Instance</th><th>Name</th><th>Status</th><th>Created</th><th>Updated</th><th>Output</th></tr>
{% for i in rows %}<tr><td class="mono"><a href="/instances/{{ i.instance_id | urlencode }}">{{ i.instance_id }}</a></td>
<td>{{ i.name }}</td><td><span class="status {{ i.runtime_status }}">{{ i.runtime_status }}</span></td>
<td>{{ i.created }}</td><td>{{ i.updated }}</td><td class="mono">{{ i.output }}</td></tr>
{% else %}<tr><td colspan="6">No instance matches.</td></tr>{% endfor %}</table>
{% if next_url %}<a id="next" href="{{ next_url }}">Next page</a>{% endif %}
{% endblock %}"""

_INSTANCE = """{% extends "base" %}{% block title %}{{ s.instance_id }}{% endblock %}{% block body %}
<h2>Instance <span class="mono">{{ s.instance_id }}</span>
 <span class="status {{ s.runtime_status }}" id="status">{{ s.runtime_status }}</span></h2>
<dl><dt>Name</dt><dd>{{ s.name }}</dd><dt>Created</dt><dd>{{ created }}</dd><dt>Updated</dt><dd>{{ updated }}</dd>
<dt>Input</dt><dd class="mono">{{ input }}</dd><dt>Output</dt><dd class="mono" id="output">{{ output }}</dd>
<dt>Custom status</dt><dd class="mono">{{ custom }}</dd>
{% if failure %}<dt>Failure</dt><dd class="mono" id="failure">{{ failure }}</dd>{% endif %}
{% if parent %}<dt>Parent</dt><dd class="mono"><a href="/instances/{{ parent | urlencode }}">{{ parent }}</a></dd>{% endif %}
</dl>
{% if actions %}<div class="actions" id="actions">{% for a in actions %}
<a href="/instances/{{ s.instance_id | urlencode }}/{{ a }}" id="action-{{ a }}">{{ a }}</a>{% endfor %}</div>{% endif %}
<h2>Waiting for</h2>
<table id="waiting"><tr><th>Kind</th><th>What</th><th>Since</th><th>Fires at</th></tr>
{% for w in waiting %}<tr><td>{{ w.kind }}</td><td class="mono">{{ w.what }}</td><td>{{ w.since }}</td>
<td>{{ w.fires_at }}</td></tr>{% else %}<tr><td colspan="4">Nothing.</td></tr>{% endfor %}</table>
{% if children %}<h2>Sub-orchestrations</h2><ul id="children">{% for c in children %}
<li><a class="mono" href="/instances/{{ c | urlencode }}">{{ c }}</a></li>{% endfor %}</ul>{% endif %}
<h2>History ({{ timeline | length }} events, {{ episodes }} episodes)</h2>
<table id="history"><tr><th>Event</th><th>At</th><th>+</th><th>Gap</th><th>Name</th><th>Input</th><th>Result</th>
<th>Took</th></tr>
{% for r in timeline %}<tr><td>{{ r.event_type }}</td><td>{{ r.at }}</td><td>{{ r.offset }}</td><td>{{ r.gap }}</td>
<td>{{ r.name }}</td><td class="mono">{{ r.input }}</td><td class="mono">{{ r.result }}</td><td>{{ r.took }}</td></tr>
{% endfor %}</table>
{% endblock %}"""

_CONFIRM = """{% extends "base" %}{% block title %}{{ action }}{% endblock %}{% block body %}
<h2>{{ action | capitalize }} <span class="mono">{{ instance_id }}</span>?</h2>
<form method="post" action="/instances/{{ instance_id | urlencode }}/{{ action }}" id="confirm-form">
{% if action == "raise" %}<p><label>Event name <input name="event" id="event-name" value="{{ event }}"></label></p>
<p><label>Event data (JSON) <input name="data" id="event-data" value="null"></label></p>{% endif %}
{% if action in ("terminate", "suspend", "resume", "rewind") %}<p><label>Reason
 <input name="reason" id="reason"></label></p>{% endif %}
<input type="hidden" name="confirm" value="yes">
<button type="submit" id="confirm">Yes, {{ action }}</button> <a href="/instances/{{ instance_id | urlencode }}">Cancel</a>
</form>{% endblock %}"""

_ENTITIES = """{% extends "base" %}{% block title %}Entities{% endblock %}{% block body %}
<form class="filters" method="get" action="/entities"><label>Name<input name="name" value="{{ name }}"></label>
<button type="submit">Filter</button></form>
<table id="entities"><tr><th>Entity</th><th>State</th><th>Locked by</th><th>Queue</th><th>Modified</th></tr>
{% for e in rows %}<tr><td class="mono"><a href="/entities/{{ e.id | urlencode }}">{{ e.id }}</a></td>
<td class="mono">{{ e.state }}</td><td class="mono">{% if e.locked_by %}<a href="/instances/{{ e.locked_by | urlencode }}">
{{ e.locked_by }}</a>{% endif %}</td><td>{{ e.queue }}</td><td>{{ e.modified }}</td></tr>
{% else %}<tr><td colspan="5">No entity.</td></tr>{% endfor %}</table>{% endblock %}"""

_ENTITY = """{% extends "base" %}{% block title %}{{ e.id }}{% endblock %}{% block body %}
<h2>Entity <span class="mono">{{ e.id }}</span></h2>
<dl><dt>State</dt><dd class="mono" id="state">{{ e.state }}</dd>
<dt>Locked by</dt><dd class="mono" id="locked-by">{% if e.locked_by %}<a href="/instances/{{ e.locked_by | urlencode }}">
{{ e.locked_by }}</a>{% else %}nobody{% endif %}</dd>
<dt>Queue</dt><dd id="queue">{{ e.queue }} waiting</dd><dt>Modified</dt><dd>{{ e.modified }}</dd></dl>
{% endblock %}"""

_ENV = Environment(
    loader=DictLoader({
        "base": _BASE, "instances": _INSTANCES, "instance": _INSTANCE, "confirm": _CONFIRM,
        "entities": _ENTITIES, "entity": _ENTITY,
    }),
    autoescape=select_autoescape(default=True, default_for_string=True),
)


def render(page: str, **values: Any) -> str:
    """The HTML of ``page`` (instances, instance, confirm, entities, entity) with ``values``."""
    return _ENV.get_template(page).render(**values)
