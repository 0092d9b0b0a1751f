
(function () {
  function run() {
    var body = document.body, banner = document.getElementById('media-banner');
    var media = Array.prototype.slice.call(document.querySelectorAll('img, audio'));
    var state = [], ok = 0, failed = 0, failedNames = [];
    function update() {
      body.dataset.mediaTotal = String(media.length);
      body.dataset.mediaOk = String(ok);
      body.dataset.mediaFailed = String(failed);
      body.dataset.mediaChecked = (ok + failed === media.length) ? 'true' : 'false';
      if (failed > 0) {
        banner.textContent = failed + ' of ' + media.length + ' media files failed to load: ' +
          failedNames.join(', ');
        banner.style.display = 'block';
      }
    }
    function settle(i, good) {
      if (state[i] !== undefined) return;
      state[i] = good;
      if (good) { ok += 1; } else { failed += 1; failedNames.push(media[i].getAttribute('src')); }
      update();
    }
    media.forEach(function (el, i) {
      if (el.tagName === 'IMG') {
        if (el.complete) { settle(i, el.naturalWidth > 0); return; }
        el.addEventListener('load', function () { settle(i, el.naturalWidth > 0); });
        el.addEventListener('error', function () { settle(i, false); });
      } else {
        if (el.error) { settle(i, false); return; }
        if (el.readyState >= 1) { settle(i, true); return; }
        el.addEventListener('loadedmetadata', function () { settle(i, true); });
        el.addEventListener('error', function () { settle(i, false); });
      }
    });
    update();
  }
  if (document.readyState === 'complete') { run(); } else { window.addEventListener('load', run); }
})();
