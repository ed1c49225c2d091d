// The live cart page: draws each `cart` event of the visit's stream (the whole cart
// every time), says so when the visit has ended or the link no longer opens a cart.
(function () {
  'use strict';
  const cart = document.getElementById('cart');
  const status = document.getElementById('status');
  const stream = new EventSource(location.pathname.replace(/\/+$/, '') + '/events');

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;   // never HTML: names are data
    return node;
  }

  function line(item) {
    const row = element('li');
    row.dataset.sku = item.sku;
    const what = element('span', 'item');
    // A product sold by weight shows what it weighed, not a count.
    const amount = item.grams ? item.grams + ' g ' : item.quantity + ' × ';
    what.append(element('span', 'quantity', amount), element('span', 'name', item.name));
    if (item.checking) what.append(element('span', 'checking', 'checking'));
    row.append(what, element('span', 'amount', item.line_total));
    return row;
  }

  function saving(item) {
    const row = element('li');
    row.append(element('span', 'name', item.name), element('span', 'amount', '−' + item.amount));
    return row;
  }

  function draw(shown) {
    document.getElementById('lines').replaceChildren(...shown.lines.map(line));
    document.getElementById('empty').hidden = shown.lines.length > 0;
    document.getElementById('saving-lines').replaceChildren(...shown.savings.map(saving));
    document.getElementById('savings-total').textContent = shown.savings_total;
    document.getElementById('savings').hidden = shown.savings.length === 0;
    document.getElementById('total').textContent = shown.total;
    cart.dataset.revision = shown.revision;
  }

  function ended(text) {
    stream.close();
    status.textContent = text;
    status.className = 'ended';
    cart.dataset.ended = 'true';
  }

  stream.onopen = function () { status.textContent = 'Live: updates as you shop'; };
  stream.addEventListener('cart', function (event) {
    const shown = JSON.parse(event.data).cart;
    if (shown) draw(shown);   // none yet: keep what is shown
  });
  stream.addEventListener('ended', function () {
    ended('Your visit has ended: your receipt follows.');
  });
  stream.onerror = function () {
    if (stream.readyState === EventSource.CLOSED) ended('This link no longer opens a cart.');
    else status.textContent = 'Reconnecting…';
  };
})();
