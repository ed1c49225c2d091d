// The review console's keys and the live receipt. Everything here also works without
// it, by form posts, except the Add button and the keys.
'use strict';

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
const typing = (target) => ['INPUT', 'SELECT', 'TEXTAREA'].includes(target.tagName)
  && !['radio', 'checkbox'].includes(target.type);

function queuePage() {
  const rows = Array.from(document.querySelectorAll('#pending tr.visit'));
  let marked = -1;
  const mark = (n) => {
    if (!rows.length) return;
    rows.forEach((row) => row.classList.remove('marked'));
    marked = Math.max(0, Math.min(rows.length - 1, n));
    rows[marked].classList.add('marked');
    rows[marked].scrollIntoView({block: 'nearest'});
  };
  document.addEventListener('keydown', (event) => {
    if (typing(event.target) || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === 'n') document.getElementById('review-next').click();
    else if (event.key === 'j') mark(marked + 1);
    else if (event.key === 'k') mark(marked - 1);
    else if (event.key === 'Enter' && marked >= 0) rows[marked].querySelector('button').click();
    else return;
    event.preventDefault();
  });
}

function visitPage() {
  const form = document.getElementById('decision');
  const receipt = document.getElementById('receipt');
  if (!form || !receipt || !document.getElementById('settle')) return;
  let pending = Promise.resolve();

  // Asks the server for the receipt the form makes now (the one place that prices and
  // totals it) and shows it; previews run one after another.
  const preview = (extra) => {
    pending = pending.then(async () => {
      const body = new FormData(form);
      for (const [name, value] of Object.entries(extra || {})) body.set(name, value);
      if (!extra) body.delete('add-sku');
      const answer = await fetch(form.dataset.preview, {
        method: 'POST', body, headers: {'X-CSRFToken': csrf()}, credentials: 'same-origin'});
      if (answer.redirected) { window.location = answer.url; return; }
      if (!answer.ok) { alert(await answer.text()); return; }
      receipt.innerHTML = await answer.text();
      receipt.dataset.revision = String(Number(receipt.dataset.revision || 0) + 1);
    });
    return pending;
  };
  form.addEventListener('change', (event) => {
    if (event.target.type === 'radio' || event.target.name.startsWith('qty-')) preview();
  });
  document.getElementById('add-line').addEventListener('click', async () => {
    const picker = document.getElementById('add-sku');
    if (!picker.value) return;
    await preview({'add-sku': picker.value, 'add-qty': document.getElementById('add-qty').value});
    picker.value = '';
    document.getElementById('add-qty').value = '1';
  });
  // A submit waits for a preview still on its way and leaves out a product picked but
  // not added, so what is sent is what is shown; it is sent once.
  form.addEventListener('submit', (event) => {
    if (form.dataset.state === 'go') { form.dataset.state = 'sent'; return; }
    event.preventDefault();
    if (form.dataset.state === 'sent') return;
    const button = event.submitter;
    pending.then(() => {
      document.getElementById('add-sku').value = '';
      form.dataset.state = 'go';
      form.requestSubmit(button);
    });
  });

  const replay = () => document.querySelectorAll('video.clip').forEach((video) => {
    video.currentTime = Number(video.dataset.cue || 0);
    video.play();
  });
  document.querySelectorAll('button.replay').forEach((button) => button.addEventListener('click', replay));
  document.addEventListener('keydown', (event) => {
    if (typing(event.target) || event.ctrlKey || event.metaKey || event.altKey) return;
    const first = document.querySelector('section.event');
    if (event.key === 's') document.getElementById('settle').click();
    else if (event.key === 'x') document.getElementById('skip').click();
    else if (event.key === 'u') document.getElementById('release').click();
    else if (event.key === 'r') replay();
    else if (/^[1-9]$/.test(event.key) && first) {
      const option = first.querySelectorAll('table.what input[type=radio]')[Number(event.key) - 1];
      if (!option) return;
      option.checked = true;
      option.dispatchEvent(new Event('change', {bubbles: true}));
    } else return;
    event.preventDefault();
  });
}

document.addEventListener('DOMContentLoaded', () => {
  if (document.body.dataset.page === 'queue') queuePage();
  if (document.body.dataset.page === 'visit') visitPage();
});
