// lockstep timeline: the first script on the page. It records every error the page meets
// (uncaught exceptions, rejected promises, console.error, resources that fail to load) into
// attributes of <html>, so that a headless browser's DOM dump shows them:
//   data-error-count="N" and data-errors='["first message", ...]' (at most 20 kept).
// It must never throw itself, and it loads nothing.
(function () {
  'use strict';
  var root = document.documentElement;
  var errors = [];
  var ERRORS_KEPT_MAX = 20;

  function note(text) {
    errors.push(String(text));
    root.setAttribute('data-error-count', String(errors.length));
    root.setAttribute('data-errors', JSON.stringify(errors.slice(0, ERRORS_KEPT_MAX)));
  }

  root.setAttribute('data-error-count', '0');
  root.setAttribute('data-errors', '[]');
  window.addEventListener('error', function (event) {
    if (event.target && event.target !== window && event.target.tagName) {
      note('could not load a ' + event.target.tagName.toLowerCase() + ' element');
      return;
    }
    note((event.message || 'error') + ' (line ' + (event.lineno || '?') + ')');
  }, true);
  window.addEventListener('unhandledrejection', function (event) {
    note('unhandled rejection: ' + String(event.reason));
  });
  var consoleError = console.error;
  console.error = function () {
    note(Array.prototype.map.call(arguments, String).join(' '));
    return consoleError.apply(console, arguments);
  };
  window.lockstepNoteError = note;
})();
