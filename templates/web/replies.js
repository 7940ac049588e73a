// The readers' replies of an article page, in place: loads the approved ones from the
// subscriber service (GET <api>), takes a fresh form token with them, and sends the
// form as JSON (POST <api>), showing the answer in the form's status line.
// Without it the form posts to the service and the replies are a link away.
// A file of its own (no inline script) that builds text nodes only (no innerHTML), so a
// Content-Security-Policy of "script-src 'self'; connect-src 'self'" allows it and
// nothing a reader writes can become markup.
(function () {
  "use strict";
  var section = document.getElementById("replies");
  if (!section || !/^https?:$/.test(location.protocol) || !window.fetch) return;
  var api = section.getAttribute("data-api");
  var list = section.querySelector("[data-replies]");
  var form = document.getElementById("reply-form");
  var status = form.querySelector("[data-status]");
  var answering = form.querySelector("[data-answering]");
  var dates = new Intl.DateTimeFormat(document.documentElement.lang || undefined, {
    year: "numeric", month: "long", day: "numeric"
  });

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function say(text, problem) {
    status.textContent = text;
    status.classList.toggle("problem", !!problem);
  }

  function answer(reply) {
    form.elements.answers.value = String(reply.id);
    answering.textContent = "";
    answering.appendChild(document.createTextNode("Answering " + reply.name + ". "));
    var cancel = el("button", "reply-answer", "Answer the article instead");
    cancel.type = "button";
    cancel.addEventListener("click", function () {
      form.elements.answers.value = "";
      answering.hidden = true;
      form.elements.comment.focus();
    });
    answering.appendChild(cancel);
    answering.hidden = false;
    form.elements.comment.focus();
  }

  function item(reply, open) {
    var li = el("li", "reply");
    li.id = "reply-" + reply.id;
    var head = el("p", "reply-head");
    var who = reply.website ? el("a", "", reply.name) : el("strong", "", reply.name);
    if (reply.website) {
      who.href = reply.website;
      who.rel = "ugc nofollow noopener";
    }
    head.appendChild(who);
    head.appendChild(document.createTextNode(" · "));
    var time = el("time", "", dates.format(new Date(reply.date)));
    time.dateTime = reply.date;
    head.appendChild(time);
    li.appendChild(head);
    var body = el("div", "reply-body");
    reply.paragraphs.forEach(function (lines) {
      var p = el("p");
      lines.forEach(function (segments, i) {
        if (i) p.appendChild(document.createElement("br"));
        segments.forEach(function (segment) {
          if (segment[1]) {
            var a = el("a", "", segment[0]);
            a.href = segment[1];
            a.rel = "ugc nofollow noopener";
            p.appendChild(a);
          } else {
            p.appendChild(document.createTextNode(segment[0]));
          }
        });
      });
      body.appendChild(p);
    });
    li.appendChild(body);
    if (open) {
      var button = el("button", "reply-answer", "Reply to " + reply.name);
      button.type = "button";
      button.addEventListener("click", function () { answer(reply); });
      li.appendChild(button);
    }
    return li;
  }

  function show(threads, open) {
    list.textContent = "";
    if (!threads.length) {
      list.appendChild(el("p", "", "No replies yet."));
      return;
    }
    var ol = el("ol");
    threads.forEach(function (thread) {
      var li = item(thread, open);
      if (thread.answers.length) {
        var inner = el("ol");
        thread.answers.forEach(function (a) { inner.appendChild(item(a, open)); });
        li.appendChild(inner);
      }
      ol.appendChild(li);
    });
    list.appendChild(ol);
  }

  var threads = [];

  function load() {
    return fetch(api, { headers: { Accept: "application/json" }, credentials: "omit" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (data) {
        threads = data.replies;
        form.elements.token.value = data.token;
        show(threads, data.open);
        if (!data.open) {
          form.hidden = true;
          section.appendChild(el("p", "reply-note", "Replies to this article are closed."));
        }
      });
  }

  function added(reply) {
    var parent = threads.filter(function (t) { return t.id === reply.parent_id; })[0];
    if (parent) parent.answers.push(reply);
    else threads.push(Object.assign({ answers: [] }, reply));
    show(threads, true);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var f = form.elements;
    var button = form.querySelector("button[type=submit]");
    var body = {
      token: f.token.value,
      answers: f.answers.value ? Number(f.answers.value) : null,
      comment: f.comment.value,
      name: f.name.value,
      email: f.email.value,
      website: f.website.value,
      notify: f.notify.checked,
    };
    body[section.querySelector(".reply-extra input").name] =
      section.querySelector(".reply-extra input").value;
    button.disabled = true;
    say("Sending your reply…");
    fetch(api, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
      credentials: "omit",
    })
      .then(function (response) {
        return response.json().then(function (data) { return [response, data]; });
      })
      .then(function (pair) {
        var response = pair[0], data = pair[1];
        if (!response.ok) {
          say(typeof data.detail === "string" ? data.detail : "Your reply could not be sent.", true);
          if (data.field && f[data.field]) f[data.field].focus();
          return;
        }
        say(data.message);
        f.comment.value = "";
        f.answers.value = "";
        answering.hidden = true;
        if (data.reply) added(data.reply);
      })
      .catch(function () {
        say("Your reply could not be sent: check your connection and try again.", true);
      })
      .then(function () { button.disabled = false; });
  });

  load().catch(function () { /* the link to the replies page stays */ });
})();
