// The dev room page: one WebRTC call with the replica through pipecat's SmallWebRTC.
//
// Signalling: POST /api/offer {sdp, type, pc_id, restart_pc} -> {sdp, type, pc_id};
// PATCH /api/offer {pc_id, candidates: [{candidate, sdp_mid, sdp_mline_index}]}.
// Transceivers in the order pipecat expects: 0 audio (microphone), 1 video (camera).
// Data channel "chat": "ping: <ms>" every second (pipecat treats a peer with no ping
// for 3 s as gone), {"type": "signalling", "message": {...}} for renegotiation and
// peer-left, and app messages as plain JSON objects in both directions.
// The camera is not sent until the bot asks for it with {"type": "devroom.camera",
// "send": true, "framerate", "width", "height"} (and "send": false stops it): a bot
// that looks at no video gets none. On pagehide the page tells the bot it is going
// with a beacon (POST /api/leave {pc_id}) before it hangs up.
"use strict";

(() => {
  // Relative to the page: /api/... for the dev room at /, and
  // /conversations/<id>/api/... for a conversation created over the API.
  const OFFER_URL = "api/offer";
  const LEAVE_URL = "api/leave";
  const CAMERA_REQUEST = "devroom.camera";
  const PING_INTERVAL_MS = 1000;
  const CANDIDATE_FLUSH_MS = 200;
  const HISTORY_SIZE = 10;
  const EVENTS_KEPT = 500;
  const STAGES = [
    ["end_of_turn", "End of turn"],
    ["transcript", "Transcript"],
    ["llm_first_token", "LLM first token"],
    ["llm_first_sentence", "LLM first sentence"],
    ["tts_first_audio", "TTS first audio"],
    ["first_frame", "First frame"],
  ];

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $("status"),
    replica: $("replica"),
    placeholder: $("replica-placeholder"),
    selfView: $("self-view"),
    join: $("join"),
    leave: $("leave"),
    interrupt: $("interrupt"),
    sayForm: $("say-form"),
    say: $("say"),
    send: $("send"),
    mediaNote: $("media-note"),
    transcript: $("transcript"),
    latencyTotal: $("latency-total"),
    perceptionSection: $("perception-section"),
    perceptionLine: $("perception-line"),
    perceptionCues: $("perception-cues"),
    perceptionAnalysis: $("perception-analysis"),
    latencyStages: $("latency-stages"),
    latencyHistory: $("latency-history"),
    speakingUser: $("speaking-user"),
    speakingReplica: $("speaking-replica"),
    captions: $("captions"),
  };

  const call = {
    pc: null,
    dc: null,
    pcId: null,
    localStream: null,
    remoteStream: null,
    camera: null, // the local camera track (shown in the self view)
    cameraSent: null, // the clone sent to the bot, at the rate and size it asked for
    cameraAsked: null, // the bot's last camera request
    pingTimer: null,
    flushTimer: null,
    candidates: [],
    canTrickle: false,
    renegotiating: false,
    messagesIn: 0,
    events: [], // the latest conversation events, with their arrival (performance.now())
  };

  // ---- status and controls -------------------------------------------------

  function setStatus(state, detail) {
    ui.status.dataset.state = state;
    ui.status.textContent = detail ? `${state} (${detail})` : state;
    const inCall = state === "connecting" || state === "connected";
    ui.join.disabled = inCall;
    ui.leave.disabled = !inCall;
    const live = state === "connected";
    ui.interrupt.disabled = !live;
    ui.say.disabled = !live;
    ui.send.disabled = !live;
  }

  function showMediaNote(text) {
    ui.mediaNote.textContent = text;
    ui.mediaNote.hidden = !text;
  }

  // ---- local media ---------------------------------------------------------

  async function getLocalMedia() {
    if (!navigator.mediaDevices?.getUserMedia) {
      showMediaNote("This browser gives no access to a microphone; joining to listen only.");
      return null;
    }
    try {
      return await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    } catch (cameraError) {
      try {
        const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
        showMediaNote(`Camera unavailable (${cameraError.name}); joined with audio only.`);
        return stream;
      } catch (micError) {
        showMediaNote(`Microphone unavailable (${micError.name}); joined to listen only.`);
        return null;
      }
    }
  }

  // ---- signalling ----------------------------------------------------------

  async function postOffer(restartPc = false) {
    const pc = call.pc;
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const response = await fetch(OFFER_URL, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        sdp: pc.localDescription.sdp,
        type: pc.localDescription.type,
        pc_id: call.pcId,
        restart_pc: restartPc,
      }),
    });
    if (!response.ok) {
      throw new Error(`offer refused: HTTP ${response.status} ${await response.text()}`);
    }
    const answer = await response.json();
    call.pcId = answer.pc_id;
    await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
    call.canTrickle = true;
    scheduleCandidateFlush();
  }

  function scheduleCandidateFlush() {
    if (!call.flushTimer) {
      call.flushTimer = setTimeout(flushCandidates, CANDIDATE_FLUSH_MS);
    }
  }

  async function flushCandidates() {
    call.flushTimer = null;
    if (!call.canTrickle || !call.pcId || call.candidates.length === 0) return;
    const batch = call.candidates.splice(0, call.candidates.length);
    try {
      await fetch(OFFER_URL, {
        method: "PATCH",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          pc_id: call.pcId,
          candidates: batch.map((c) => ({
            candidate: c.candidate,
            sdp_mid: c.sdpMid,
            sdp_mline_index: c.sdpMLineIndex,
          })),
        }),
      });
    } catch (error) {
      console.warn("devroom: could not send ICE candidates", error);
    }
  }

  async function renegotiate() {
    if (call.renegotiating || !call.pc) return;
    call.renegotiating = true;
    try {
      await postOffer(false);
    } catch (error) {
      console.warn("devroom: renegotiation failed", error);
    } finally {
      call.renegotiating = false;
    }
  }

  // ---- data channel --------------------------------------------------------

  function sendJson(message) {
    if (call.dc?.readyState !== "open") return false;
    call.dc.send(JSON.stringify(message));
    return true;
  }

  // pipecat's SmallWebRTC reads the "type" of every inbound message and drops one
  // that has none, so app messages carry their event type there too.
  function sendConversationEvent(eventType, properties = {}) {
    return sendJson({
      type: eventType,
      message_type: "conversation",
      event_type: eventType,
      properties,
    });
  }

  function sendTrackStatus(receiverIndex, enabled) {
    sendJson({
      type: "signalling",
      message: { type: "trackStatus", receiver_index: receiverIndex, enabled },
    });
  }

  function openDataChannel(pc, hasMic) {
    const dc = pc.createDataChannel("chat", { ordered: true });
    dc.addEventListener("open", () => {
      sendTrackStatus(0, hasMic);
      sendTrackStatus(1, Boolean(call.cameraSent));
      call.pingTimer = setInterval(() => {
        if (dc.readyState === "open") dc.send(`ping: ${Date.now()}`);
      }, PING_INTERVAL_MS);
    });
    dc.addEventListener("close", () => {
      clearInterval(call.pingTimer);
      call.pingTimer = null;
    });
    dc.addEventListener("message", (event) => onChannelMessage(event.data));
    return dc;
  }

  function onChannelMessage(raw) {
    let message;
    try {
      message = JSON.parse(raw);
    } catch {
      console.warn("devroom: non-JSON data channel message", raw);
      return;
    }
    if (message?.type === "signalling") {
      const kind = message.message?.type;
      if (kind === "renegotiate") renegotiate();
      else if (kind === "peerLeft") leave("the replica left");
      return;
    }
    if (message?.type === CAMERA_REQUEST) {
      sendCamera(message).catch((error) => console.warn("devroom: camera request failed", error));
      return;
    }
    if (message?.message_type === "conversation") {
      call.messagesIn += 1;
      call.events.push({ at: performance.now(), message });
      if (call.events.length > EVENTS_KEPT) call.events.shift();
      onConversationEvent(message);
    }
    // Anything else (e.g. RTVI messages, label "rtvi-ai") is not for this page.
  }

  // ---- camera: sent only when the bot asks, at the rate and size it asks for --

  function cameraSender() {
    return call.pc?.getTransceivers()[1]?.sender ?? null;
  }

  async function sendCamera(request) {
    const sender = cameraSender();
    call.cameraAsked = request;
    if (!sender) return;
    const previous = call.cameraSent;
    if (!request.send || !call.camera) {
      call.cameraSent = null;
      await sender.replaceTrack(null);
      previous?.stop();
      sendTrackStatus(1, false);
      return;
    }
    const track = call.camera.clone();
    const constraints = {};
    if (request.width) constraints.width = { ideal: request.width };
    if (request.height) constraints.height = { ideal: request.height };
    if (request.framerate) constraints.frameRate = { ideal: request.framerate, max: request.framerate };
    await track.applyConstraints(constraints);
    await sender.replaceTrack(track);
    if (request.framerate) {
      const parameters = sender.getParameters();
      for (const encoding of parameters.encodings ?? []) encoding.maxFramerate = request.framerate;
      if (parameters.encodings?.length) await sender.setParameters(parameters);
    }
    call.cameraSent = track;
    previous?.stop();
    sendTrackStatus(1, true);
  }

  // ---- interactions protocol: replica -> page ------------------------------

  function onConversationEvent(message) {
    const props = message.properties ?? {};
    switch (message.event_type) {
      case "conversation.utterance":
        showUtterance(props.role, props.speech ?? "", props.final !== false);
        if (captionsOn) showCaption(props.role, props.speech ?? "", props.final !== false);
        break;
      case "conversation.user.started_speaking":
        setSpeaking(ui.speakingUser, true);
        break;
      case "conversation.user.stopped_speaking":
        setSpeaking(ui.speakingUser, false);
        break;
      case "conversation.replica.started_speaking":
        setSpeaking(ui.speakingReplica, true);
        break;
      case "conversation.replica.stopped_speaking":
        setSpeaking(ui.speakingReplica, false);
        break;
      case "conversation.replica_interrupted":
        setSpeaking(ui.speakingReplica, false);
        addTranscriptNote("replica interrupted");
        break;
      case "conversation.latency":
        showLatency(props.timings_ms ?? {});
        break;
      case "conversation.perception_cues":
        showPerception(props);
        break;
      case "conversation.perception_tool_call":
        addTranscriptNote(`perception tool ${props.name ?? "?"} (${props.cue?.name ?? ""}: ${props.cue?.value ?? ""})`);
        break;
      case "conversation.perception_analysis":
        ui.perceptionSection.hidden = false;
        ui.perceptionAnalysis.hidden = false;
        ui.perceptionAnalysis.textContent = props.analysis ?? "";
        break;
      default:
        break;
    }
  }

  function setSpeaking(element, speaking) {
    element.dataset.speaking = String(speaking);
  }

  // A live (non-final) line per role is updated in place until its final text arrives.
  const liveLines = new Map();

  function showUtterance(role, speech, final) {
    const who = role === "user" ? "user" : "replica";
    let line = liveLines.get(who);
    if (!line) {
      line = document.createElement("li");
      line.dataset.role = who;
      const name = document.createElement("span");
      name.className = "who";
      name.textContent = who === "user" ? "You" : "Replica";
      const text = document.createElement("span");
      text.className = "text";
      line.append(name, text);
      ui.transcript.append(line);
    }
    line.dataset.final = String(final);
    line.querySelector(".text").textContent = speech;
    if (final) liveLines.delete(who);
    else liveLines.set(who, line);
    ui.transcript.scrollTop = ui.transcript.scrollHeight;
  }

  // Closed captions (the conversation's enable_closed_captions): over the video, the
  // line being said now, by the user or the replica; a final line fades after a while.
  const CAPTION_HOLD_MS = 4000;
  let captionsOn = false;
  let captionTimer = null;

  function showCaption(role, speech, final) {
    if (!speech.trim()) return;
    const who = role === "user" ? "user" : "replica";
    ui.captions.dataset.role = who;
    ui.captions.querySelector(".who").textContent = who === "user" ? "You" : "Replica";
    ui.captions.querySelector(".text").textContent = speech;
    ui.captions.hidden = false;
    clearTimeout(captionTimer);
    if (final) captionTimer = setTimeout(() => { ui.captions.hidden = true; }, CAPTION_HOLD_MS);
  }

  function addTranscriptNote(text) {
    const line = document.createElement("li");
    line.dataset.role = "system";
    line.textContent = text;
    ui.transcript.append(line);
    ui.transcript.scrollTop = ui.transcript.scrollHeight;
  }

  // The live cues (conversation.perception_cues): the line the LLM gets, and each cue since when.
  function showPerception(props) {
    ui.perceptionSection.hidden = false;
    ui.perceptionLine.textContent = props.line ?? "–";
    ui.perceptionCues.replaceChildren();
    for (const [name, cue] of Object.entries(props.cues ?? {})) {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.dataset.cue = name;
      dd.textContent = `${cue.value} (since ${Number(cue.since_s ?? 0).toFixed(1)} s)`;
      ui.perceptionCues.append(dt, dd);
    }
  }

  const formatMs = (value) => (typeof value === "number" ? String(Math.round(value)) : "–");

  function showLatency(timings) {
    ui.latencyTotal.textContent = formatMs(timings.total);
    const total = typeof timings.total === "number" && timings.total > 0 ? timings.total : null;
    ui.latencyStages.replaceChildren();
    for (const [key, label] of STAGES) {
      const value = timings[key];
      const dt = document.createElement("dt");
      dt.textContent = label;
      const meter = document.createElement("div");
      meter.className = "meter";
      const fill = document.createElement("span");
      const share = typeof value === "number" && total ? Math.min(1, value / total) : 0;
      fill.style.width = `${(share * 100).toFixed(1)}%`;
      meter.append(fill);
      const dd = document.createElement("dd");
      dd.textContent = typeof value === "number" ? `${formatMs(value)} ms` : "–";
      ui.latencyStages.append(dt, meter, dd);
    }
    const item = document.createElement("li");
    item.textContent = `${formatMs(timings.total)} ms`;
    ui.latencyHistory.prepend(item);
    while (ui.latencyHistory.children.length > HISTORY_SIZE) {
      ui.latencyHistory.lastElementChild.remove();
    }
  }

  // ---- call lifecycle ------------------------------------------------------

  async function join() {
    setStatus("connecting");
    showMediaNote("");
    try {
      const stream = await getLocalMedia();
      call.localStream = stream;
      const mic = stream?.getAudioTracks()[0] ?? null;
      const camera = stream?.getVideoTracks()[0] ?? null;
      call.camera = camera;
      if (camera) {
        ui.selfView.srcObject = new MediaStream([camera]);
        ui.selfView.dataset.live = "true";
      }

      const pc = new RTCPeerConnection({ iceServers: [] });
      call.pc = pc;
      call.remoteStream = new MediaStream();
      ui.replica.srcObject = call.remoteStream;

      // Order matters: pipecat maps transceiver 0 to audio and 1 to the camera.
      // The camera's transceiver sends nothing until the bot asks (sendCamera).
      pc.addTransceiver(mic ?? "audio", { direction: "sendrecv" });
      pc.addTransceiver("video", { direction: "sendrecv" });
      call.dc = openDataChannel(pc, Boolean(mic));

      pc.addEventListener("icecandidate", (event) => {
        if (event.candidate) {
          call.candidates.push(event.candidate);
          scheduleCandidateFlush();
        }
      });
      pc.addEventListener("track", (event) => {
        call.remoteStream.addTrack(event.track);
        if (event.track.kind === "video") ui.placeholder.hidden = true;
        ui.replica.play().catch(() => {});
      });
      pc.addEventListener("connectionstatechange", () => {
        if (call.pc !== pc) return;
        const state = pc.connectionState;
        if (state === "connected") setStatus("connected");
        else if (state === "failed") leave("connection failed");
        else if (state === "disconnected") setStatus("connecting", "reconnecting");
        else if (state === "closed") leave();
      });

      await postOffer(false);
    } catch (error) {
      console.error("devroom: join failed", error);
      leave(error.message);
    }
  }

  function leave(reason) {
    const { pc, dc, localStream, cameraSent } = call;
    call.camera = null;
    call.cameraSent = null;
    call.cameraAsked = null;
    call.pc = null;
    call.dc = null;
    call.pcId = null;
    call.localStream = null;
    call.candidates = [];
    call.canTrickle = false;
    clearInterval(call.pingTimer);
    clearTimeout(call.flushTimer);
    call.pingTimer = null;
    call.flushTimer = null;
    dc?.close();
    pc?.close();
    cameraSent?.stop();
    localStream?.getTracks().forEach((track) => track.stop());
    ui.selfView.srcObject = null;
    ui.selfView.dataset.live = "false";
    ui.replica.srcObject = null;
    ui.placeholder.hidden = false;
    setSpeaking(ui.speakingUser, false);
    setSpeaking(ui.speakingReplica, false);
    liveLines.clear();
    setStatus("disconnected", reason);
  }

  // ---- page wiring ---------------------------------------------------------

  ui.join.addEventListener("click", join);
  ui.leave.addEventListener("click", () => leave());
  ui.interrupt.addEventListener("click", () => sendConversationEvent("conversation.interrupt"));
  // The bot's persona and mode: an echo persona speaks what Say sends, word for word.
  const CONFIG_URL = "api/config";
  let pipelineMode = "full";
  fetch(CONFIG_URL)
    .then((response) => (response.ok ? response.json() : {}))
    .then((config) => {
      pipelineMode = config.pipeline_mode || "full";
      captionsOn = config.closed_captions === true;
      document.body.dataset.captions = String(captionsOn);
    })
    .catch(() => {});
  ui.sayForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = ui.say.value.trim();
    if (!text) return;
    const eventType = pipelineMode === "echo" ? "conversation.echo" : "conversation.respond";
    if (sendConversationEvent(eventType, { text })) ui.say.value = "";
  });
  // A closed tab, a reload or a navigation: tell the bot first (a beacon survives
  // the page), then hang up, which also closes the data channel it watches.
  window.addEventListener("pagehide", () => {
    if (call.pcId) navigator.sendBeacon(LEAVE_URL, JSON.stringify({ pc_id: call.pcId }));
    leave();
  });

  // Read-only hooks for tests and the console.
  window.devroom = {
    get pc() { return call.pc; },
    get pcId() { return call.pcId; },
    get messagesIn() { return call.messagesIn; },
    get events() { return call.events.slice(); },
    get cameraAsked() { return call.cameraAsked; },
    get cameraSending() { return Boolean(call.cameraSent); },
  };

  setStatus("idle");
})();
