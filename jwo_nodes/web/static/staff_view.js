// The staff view: draws each `checks` event (every open ID-check request, each time)
// and posts an associate's confirm or refuse with the session's CSRF token.
(function () {
  'use strict';
  const token = document.querySelector('meta[name="csrf-token"]').content;
  const status = document.getElementById('status');
  const stream = new EventSource('/staff/events');

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;   // never HTML: names are data
    return node;
  }

  function decide(check, decision, row) {
    const body = new URLSearchParams({visit_code: check.visit_code, sku: check.sku, decision: decision});
    row.querySelectorAll('button').forEach(function (b) { b.disabled = true; });
    fetch('/staff/id-checks', {method: 'POST', body: body, headers: {'X-CSRF-Token': token},
                               credentials: 'same-origin'})
      .then(function (response) {
        if (!response.ok) throw new Error(response.status);
      })
      .catch(function (error) {
        status.textContent = 'Not sent (' + error.message + '): try again.';
        row.querySelectorAll('button').forEach(function (b) { b.disabled = false; });
      });
  }

  function row(check) {
    const tr = element('tr');
    tr.dataset.visit = check.visit_code;
    tr.dataset.sku = check.sku;
    const actions = element('td', 'actions');
    const verify = element('button', 'verify', 'ID OK');
    const refuse = element('button', 'refuse', 'Refuse');
    verify.addEventListener('click', function () { decide(check, 'verified', tr); });
    refuse.addEventListener('click', function () { decide(check, 'refused', tr); });
    actions.append(verify, ' ', refuse);
    tr.append(element('td', 'visit', check.visit_code), element('td', 'name', check.name),
              element('td', 'shelf', check.shelf_id), actions);
    return tr;
  }

  stream.addEventListener('checks', function (event) {
    const checks = JSON.parse(event.data);
    document.getElementById('check-rows').replaceChildren(...checks.map(row));
    document.getElementById('checks').hidden = checks.length === 0;
    document.getElementById('empty').hidden = checks.length > 0;
    status.textContent = 'Live.';
  });
  stream.onerror = function () { status.textContent = 'Reconnecting…'; };
}());
