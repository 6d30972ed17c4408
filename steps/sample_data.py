"""A seeded generator of dialogue → summary records.

The shipped sample (`resources/dialogue_summaries.jsonl`) is this generator's output for
the default seed. It is built to be hard to memorise: many scenarios, speakers, slot values,
optional turns, small-talk distractors and several paraphrases of every summary, so a
fine-tuned model improves clearly on held-out records but cannot reach a perfect score.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

SAMPLE_SEED = 20261128
SAMPLE_SIZE = 720
SAMPLE_RESOURCE = "dialogue_summaries.jsonl"

NAMES = (
    "Amara", "Ben", "Chloe", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas",
    "Kavya", "Liam", "Mei", "Nikolai", "Olivia", "Pedro", "Quinn", "Rosa", "Samir", "Tessa",
    "Umar", "Vera", "Wen", "Ximena", "Yusuf", "Zoe", "Aditya", "Bianca", "Carlos", "Daniela",
    "Emeka", "Fatima", "Gustav", "Hannah", "Ivan", "Julia", "Kofi", "Leila", "Marco", "Nadia",
    "Oscar", "Priya", "Rafael", "Sofia", "Tomasz", "Uma", "Viktor", "Wanjiru", "Yara", "Zeynep",
    "Anil", "Beatriz", "Connor", "Dalia", "Erik", "Freya", "Gabriel", "Hana", "Isaac", "Jade",
    "Kenji", "Lucia", "Mateo", "Noor", "Owen", "Paula", "Ravi", "Selin", "Theo", "Valentina",
)
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
TIMES = ("8 am", "9:30", "10 o'clock", "noon", "1 pm", "2:15", "3 pm", "4:30", "6 pm", "7:45")

SMALL_TALK = (
    ("How was your weekend?", "Quiet, mostly. I finally cleaned the garage."),
    ("Did you watch the match last night?", "Only the second half. What a finish!"),
    ("Is it still raining over there?", "It stopped an hour ago, thankfully."),
    ("How is the new job going?", "Busy, but I like the team."),
    ("Did you try that bakery on the corner?", "Yes, the cinnamon rolls are great."),
    ("Are you still learning the guitar?", "A little. My fingers hurt though."),
    ("How's your sister doing?", "She's fine, she just moved to a new flat."),
    ("Sorry, my phone is almost dead.", "No problem, be quick then."),
)
OPENERS = ("Hi {b}!", "Hey {b}, got a minute?", "Hello {b}.", "Morning, {b}.", "{b}, are you free?")
CLOSERS = (
    ("Thanks a lot.", "Anytime."), ("Great, see you then.", "See you!"),
    ("Perfect, thank you.", "You're welcome."), ("Okay, talk later.", "Bye!"),
)


@dataclass(frozen=True)
class Scene:
    """One generated conversation before it is laid out as text."""

    topic: str
    turns: list[tuple[str, str]]  # (speaker, utterance)
    summary: str


Scenario = Callable[[random.Random, str, str, str], Scene]


def _pick(rng: random.Random, options: tuple[str, ...] | list[str]) -> str:
    return options[rng.randrange(len(options))]


def _reschedule(rng: random.Random, a: str, b: str, c: str) -> Scene:
    reasons = (
        ("I have a dentist appointment", "{a} has a dentist appointment"),
        ("my train was cancelled", "{a}'s train was cancelled"),
        ("I have to pick up my son from school", "{a} has to pick up a child from school"),
        ("the client call got moved", "{a}'s client call was moved"),
        ("I'm stuck at the airport", "{a} is stuck at the airport"),
    )
    day, day2 = rng.sample(DAYS[:5], 2)
    time2 = _pick(rng, TIMES)
    first, third = reasons[rng.randrange(len(reasons))]
    reason = third.format(a=a)
    turns = [
        (a, f"I can't make our meeting on {day}, {first}."),
        (b, _pick(rng, ("Oh, that's a pity.", "No worries.", "Hm, okay.")) + f" Does {day2} work for you?"),
    ]
    if rng.random() < 0.5:
        turns += [(a, f"{day2} morning is full. Could we do it later?"), (b, f"Sure, what about {time2}?")]
    else:
        turns += [(a, f"Yes, {day2} is fine. What time?"), (b, f"Let's say {time2}.")]
    turns.append((a, _pick(rng, ("Works for me.", "Great, I'll update the invite.", "Deal."))))
    summary = _pick(rng, (
        f"{a} can't attend the {day} meeting, so {a} and {b} move it to {day2} at {time2}.",
        f"{a} and {b} reschedule their meeting from {day} to {day2} at {time2}.",
        f"Because {reason}, the meeting is moved to {day2} at {time2}.",
    ))
    return Scene("reschedule", turns, summary)


def _dinner(rng: random.Random, a: str, b: str, c: str) -> Scene:
    places = (("Luigi's", "Italian"), ("Saffron House", "Indian"), ("Blue Lotus", "Thai"),
              ("El Camino", "Mexican"), ("Sakura", "Japanese"), ("The Old Mill", "British"))
    place, cuisine = places[rng.randrange(len(places))]
    day = _pick(rng, DAYS)
    t = _pick(rng, ("7 pm", "8 pm", "7:30", "half past six"))
    turns = [(a, f"Do you want to have dinner at {place} on {day}?")]
    if rng.random() < 0.35:
        excuse = _pick(rng, ("I'm working late", "my parents are visiting", "I'm on a diet this week"))
        turns += [(b, f"I'd love to, but {excuse}."), (a, "Next week then?"), (b, "Yes, next week is good.")]
        summary = _pick(rng, (
            f"{b} declines {a}'s invitation to dinner at {place} on {day}; they will go next week instead.",
            f"{a} invites {b} to {place}, but {b} can't make it on {day}, so they postpone to next week.",
        ))
    else:
        turns += [(b, f"{cuisine} food? Sounds great. What time?"), (a, f"How about {t}?"),
                  (b, _pick(rng, ("Perfect.", "Fine, I'll meet you there.", "Okay, I'll book a table.")))]
        summary = _pick(rng, (
            f"{a} and {b} will have dinner at {place} on {day} at {t}.",
            f"{b} accepts {a}'s invitation to the {cuisine} restaurant {place} on {day} at {t}.",
            f"{a} invites {b} to {place} for dinner on {day}; they meet at {t}.",
        ))
    return Scene("dinner", turns, summary)


def _borrow(rng: random.Random, a: str, b: str, c: str) -> Scene:
    items = (("drill", "to put up some shelves"), ("ladder", "to clean the gutters"),
             ("tent", "for a camping trip"), ("laptop charger", "because mine broke"),
             ("car", "to move some boxes"), ("projector", "for a presentation"))
    item, purpose = items[rng.randrange(len(items))]
    day = _pick(rng, DAYS)
    turns = [(a, f"Could I borrow your {item}? I need it {purpose}.")]
    if rng.random() < 0.3:
        turns += [(b, f"Sorry, I lent it to {c} last week."), (a, f"Ah, I'll ask {c} then.")]
        summary = _pick(rng, (
            f"{a} wants to borrow {b}'s {item}, but {b} lent it to {c}, so {a} will ask {c}.",
            f"{b} can't lend {a} the {item} because {c} has it.",
        ))
    else:
        turns += [(b, "Sure. When do you need it?"), (a, f"By {day}, if possible."),
                  (b, f"I'll drop it off on {day} morning.")]
        summary = _pick(rng, (
            f"{b} will lend {a} the {item} and bring it on {day}.",
            f"{a} borrows {b}'s {item} {purpose}; {b} drops it off on {day}.",
            f"{a} asks to borrow a {item} and {b} agrees to deliver it on {day}.",
        ))
    return Scene("borrow", turns, summary)


def _car_repair(rng: random.Random, a: str, b: str, c: str) -> Scene:
    problems = (("the brakes squeak", "worn brake pads", "brake pads"),
                ("the engine light is on", "a faulty sensor", "sensor"),
                ("it won't start in the morning", "a dead battery", "battery"),
                ("there's a rattle under the car", "a loose exhaust", "exhaust bracket"))
    symptom, cause, part = problems[rng.randrange(len(problems))]
    price = rng.choice((85, 120, 149, 210, 260, 340))
    day = _pick(rng, DAYS[:6])
    turns = [(a, f"Hi, it's {a}. What's wrong with my car? {symptom.capitalize()}."),
             (b, f"We found {cause}. We need to replace the {part}."),
             (a, "How much will it cost?"), (b, f"About {price} dollars, parts and labour."),
             (a, "When can I pick it up?"), (b, f"It'll be ready on {day}.")]
    summary = _pick(rng, (
        f"The mechanic tells {a} the car has {cause}; the repair costs about {price} dollars and will be ready on {day}.",
        f"{a}'s car needs a new {part}. {b} quotes {price} dollars and says it will be ready on {day}.",
        f"{b} finds {cause} in {a}'s car and will fix it for {price} dollars by {day}.",
    ))
    return Scene("car repair", turns, summary)


def _doctor(rng: random.Random, a: str, b: str, c: str) -> Scene:
    symptoms = ("a sore throat", "back pain", "a rash on my arm", "headaches", "a twisted ankle")
    symptom = _pick(rng, symptoms)
    day, t = _pick(rng, DAYS[:5]), _pick(rng, TIMES)
    doctor = _pick(rng, ("Dr. Patel", "Dr. Okafor", "Dr. Lindqvist", "Dr. Moreau", "Dr. Tanaka"))
    turns = [(a, f"I'd like to book an appointment. I've had {symptom} for a few days."),
             (b, "Are you already registered with us?"),
             (a, rng.choice(("Yes, I am.", "I think so, under my maiden name.", "Yes, since last year."))),
             (b, f"{doctor} has a slot on {day} at {t}."), (a, "I'll take it.")]
    summary = _pick(rng, (
        f"{a} books an appointment with {doctor} on {day} at {t} because of {symptom.replace('my ', 'the ')}.",
        f"{a} has {symptom.replace('my ', 'the ')} and gets an appointment on {day} at {t} with {doctor}.",
    ))
    return Scene("doctor", turns, summary)


def _lost_item(rng: random.Random, a: str, b: str, c: str) -> Scene:
    item = _pick(rng, ("wallet", "keys", "scarf", "umbrella", "headphones", "glasses"))
    place = _pick(rng, ("gym", "library", "office kitchen", "cinema", "bus"))
    turns = [(a, f"Have you seen my {item}? I think I left them at the {place}." if item in ("keys", "headphones", "glasses")
              else f"Have you seen my {item}? I think I left it at the {place}.")]
    if rng.random() < 0.5:
        turns += [(b, "Yes! I picked it up. It's on my desk." if item not in ("keys", "headphones", "glasses")
                   else "Yes! I picked them up. They're on my desk."), (a, "You're a lifesaver.")]
        summary = _pick(rng, (
            f"{a} lost the {item} at the {place}, but {b} found it and kept it on the desk.",
            f"{b} has {a}'s {item}, which {a} left at the {place}.",
        ))
    else:
        turns += [(b, f"No, sorry. Did you ask at the {place}'s lost and found?"),
                  (a, "Not yet, I'll go there after lunch.")]
        summary = _pick(rng, (
            f"{a} lost the {item} at the {place}. {b} suggests checking the lost and found, and {a} will go after lunch.",
            f"{b} hasn't seen {a}'s {item}; {a} will ask at the {place}'s lost and found.",
        ))
    return Scene("lost item", turns, summary)


def _gift(rng: random.Random, a: str, b: str, c: str) -> Scene:
    gifts = ("a cookbook", "a plant", "concert tickets", "a board game", "a watch", "a spa voucher")
    g1, g2 = rng.sample(gifts, 2)
    amount = rng.choice((20, 25, 30, 40, 50))
    turns = [(a, f"{c}'s birthday is next week. Any idea for a present?"),
             (b, f"Maybe {g1}?"), (a, f"{c} already has one. What about {g2}?"),
             (b, f"Good idea. Shall we split it? {amount} each?"), (a, "Deal, I'll order it tonight.")]
    summary = _pick(rng, (
        f"{a} and {b} will buy {g2} for {c}'s birthday and split the cost, {amount} each.",
        f"For {c}'s birthday, {a} and {b} choose {g2} instead of {g1}; {a} orders it tonight.",
        f"{a} and {b} plan {c}'s birthday present: {g2}, paying {amount} each.",
    ))
    return Scene("gift", turns, summary)


def _trip(rng: random.Random, a: str, b: str, c: str) -> Scene:
    city = _pick(rng, ("Lisbon", "Kyoto", "Prague", "Montreal", "Cape Town", "Edinburgh", "Oaxaca"))
    mode = _pick(rng, ("train", "plane", "bus", "car"))
    day = _pick(rng, DAYS)
    nights = rng.choice((2, 3, 4, 5, 7))
    turns = [(a, f"So, are we still going to {city}?"), (b, "Of course! How do we get there?"),
             (a, f"The {mode} is the easiest. We could leave on {day}."),
             (b, f"Okay. I'll book the hotel for {nights} nights."), (a, "And I'll get the tickets.")]
    summary = _pick(rng, (
        f"{a} and {b} are going to {city} by {mode} on {day}; {b} books a hotel for {nights} nights and {a} buys the tickets.",
        f"{a} and {b} plan a {nights}-night trip to {city}, leaving on {day} by {mode}.",
    ))
    return Scene("trip", turns, summary)


def _product_return(rng: random.Random, a: str, b: str, c: str) -> Scene:
    product = _pick(rng, ("kettle", "jacket", "blender", "phone case", "desk lamp", "pair of boots"))
    defect = _pick(rng, ("it stopped working after two days", "the zip is broken", "it arrived scratched",
                         "it's the wrong size"))
    turns = [(a, f"I bought a {product} here last week and {defect}."), (b, "Do you have the receipt?"),
             (a, "Yes, here it is.")]
    if rng.random() < 0.5:
        turns += [(b, "Would you like a refund or an exchange?"), (a, "A refund, please.")]
        outcome, short = "gets a refund", "refund"
    else:
        turns += [(b, "We can exchange it for a new one."), (a, "That's fine.")]
        outcome, short = "exchanges it for a new one", "exchange"
    because = defect.replace("it", "the item", 1) if defect.startswith("it") else defect
    summary = _pick(rng, (
        f"{a} returns a {product} because {because} and {outcome}.",
        f"{a} brings back a faulty {product} with the receipt and {b} arranges a {short}.",
    ))
    return Scene("product return", turns, summary)


def _homework(rng: random.Random, a: str, b: str, c: str) -> Scene:
    subject = _pick(rng, ("statistics", "chemistry", "French", "history essay", "physics", "coding"))
    day = _pick(rng, DAYS)
    place = _pick(rng, ("the library", "the café", "my place", "the study room"))
    t = _pick(rng, TIMES)
    turns = [(a, f"I'm lost with the {subject} assignment. It's due {day}."),
             (b, "I finished mine yesterday. Want to go through it together?"),
             (a, "That would be amazing."), (b, f"Meet at {place} at {t}?"), (a, "See you there.")]
    where = place.replace("my place", f"{b}'s place")
    summary = _pick(rng, (
        f"{b} will help {a} with the {subject} assignment due {day}; they meet at {where} at {t}.",
        f"{a} struggles with the {subject} assignment, so {b} offers to go through it at {t}.",
    ))
    return Scene("homework", turns, summary)


def _interview(rng: random.Random, a: str, b: str, c: str) -> Scene:
    company = _pick(rng, ("Northwind", "Acme Labs", "Bluepeak", "Orbital Foods", "Tidewater Bank"))
    role = _pick(rng, ("data analyst", "nurse", "product designer", "sales manager", "teacher"))
    day = _pick(rng, DAYS[:5])
    feeling = _pick_pair(rng, (("went well", "went well"), ("was tough", "was tough")))
    turns = [(b, "How did the interview go?"),
             (a, f"It {feeling[0]}. They asked a lot about my last job."),
             (b, "Which position was it again?"), (a, f"{role.capitalize()} at {company}."),
             (b, "When will you hear back?"), (a, f"They said by {day}.")]
    summary = _pick(rng, (
        f"{a} had an interview for a {role} job at {company}, which {feeling[1]}; {a} will hear back by {day}.",
        f"{a} tells {b} the {company} interview for the {role} position {feeling[1]} and expects an answer by {day}.",
    ))
    return Scene("job interview", turns, summary)


def _apartment(rng: random.Random, a: str, b: str, c: str) -> Scene:
    issue, who = _pick_pair(rng, (("the kitchen sink is leaking", "a plumber"),
                                  ("the heating doesn't work", "a technician"),
                                  ("the lights in the hallway flicker", "an electrician"),
                                  ("there's mould in the bathroom", "a cleaning company")))
    day = _pick(rng, DAYS)
    turns = [(a, f"Hello, it's {a} from flat {rng.randint(1, 40)}. {issue.capitalize()}."),
             (b, "Since when?"), (a, "Since yesterday evening."),
             (b, f"I'll send {who} on {day}."), (a, "Thank you, I'll be home all day.")]
    summary = _pick(rng, (
        f"{a} tells the landlord that {issue}; {b} will send {who} on {day}.",
        f"The landlord {b} arranges for {who} to come on {day} because {issue} in {a}'s flat.",
    ))
    return Scene("apartment", turns, summary)


def _pick_pair(rng: random.Random, options: tuple[tuple[str, str], ...]) -> tuple[str, str]:
    return options[rng.randrange(len(options))]


def _bug(rng: random.Random, a: str, b: str, c: str) -> Scene:
    app = _pick(rng, ("billing app", "mobile app", "checkout page", "reporting dashboard"))
    action = _pick(rng, ("you upload a photo", "you export to PDF", "you change the language", "you log in twice"))
    day = _pick(rng, DAYS[:5])
    turns = [(a, f"The {app} crashes when {action}."), (b, "Since the last release?"),
             (a, "Yes, since Tuesday's update."), (b, "Can you send me the logs?"), (a, "Sending them now.")]
    if rng.random() < 0.5:
        turns.append((b, f"Thanks. I'll have a fix by {day}."))
        summary = _pick(rng, (
            f"{a} reports that the {app} crashes when {action.replace('you ', 'a user ')}; {b} will fix it by {day}.",
            f"{b} gets the logs from {a} about the {app} crash and promises a fix by {day}.",
        ))
    else:
        turns.append((b, "Thanks. I'll roll back the update today."))
        summary = _pick(rng, (
            f"The {app} crashes after the update, so {b} will roll it back today.",
            f"{a} reports a crash in the {app}; {b} asks for logs and rolls back the update.",
        ))
    return Scene("software bug", turns, summary)


def _pet(rng: random.Random, a: str, b: str, c: str) -> Scene:
    pet = _pick(rng, ("cat", "dog", "rabbit", "parrot", "goldfish"))
    n = rng.choice((2, 3, 4, 5, 10))
    turns = [(a, f"I'm away for {n} days. Could you feed my {pet}?"),
             (b, "Of course. Where's the food?"), (a, "In the cupboard by the door. I'll leave you the keys."),
             (b, f"No problem. Does the {pet} need anything else?"),
             (a, _pick(rng, ("Just some attention.", "Fresh water every day.", "Not really.")))]
    summary = _pick(rng, (
        f"{b} agrees to feed {a}'s {pet} while {a} is away for {n} days; {a} will leave the keys.",
        f"{a} asks {b} to look after the {pet} for {n} days.",
    ))
    return Scene("pet care", turns, summary)


def _delivery(rng: random.Random, a: str, b: str, c: str) -> Scene:
    day = _pick(rng, DAYS)
    reason = _pick(rng, ("a storm", "a sorting error", "a holiday backlog", "a wrong address label"))
    turns = [(a, "My parcel was supposed to arrive yesterday. Where is it?"),
             (b, "Let me check the tracking number."), (a, f"It's {rng.randint(100000, 999999)}."),
             (b, f"It was delayed by {reason}. It will arrive on {day}."),
             (a, _pick(rng, ("Okay, thanks.", "That's annoying, but fine.")))]
    summary = _pick(rng, (
        f"{a}'s parcel is delayed by {reason} and will arrive on {day}.",
        f"{b} tells {a} the late delivery is due to {reason}; it comes on {day}.",
    ))
    return Scene("delivery", turns, summary)


def _project(rng: random.Random, a: str, b: str, c: str) -> Scene:
    project = _pick(rng, ("marketing report", "science fair poster", "budget review", "website redesign"))
    t1, t2 = rng.sample(("the slides", "the research", "the charts", "the interviews", "the draft"), 2)
    day = _pick(rng, DAYS)
    turns = [(a, f"Let's split the {project}. I can do {t1}."), (b, f"Then I'll take {t2}."),
             (a, f"And {c}?"), (b, f"{c} can proofread everything."), (a, f"Okay, all done by {day}.")]
    summary = _pick(rng, (
        f"For the {project}, {a} does {t1}, {b} does {t2} and {c} proofreads; it is due {day}.",
        f"{a} and {b} divide the {project}: {t1} for {a}, {t2} for {b}, with a {day} deadline.",
    ))
    return Scene("team project", turns, summary)


def _picnic(rng: random.Random, a: str, b: str, c: str) -> Scene:
    park = _pick(rng, ("Riverside Park", "the botanical garden", "Hillcrest Park", "the beach"))
    day, day2 = rng.sample(DAYS, 2)
    turns = [(a, f"Picnic at {park} on {day}?"), (b, f"The forecast says rain on {day}.")]
    if rng.random() < 0.5:
        turns += [(a, f"What about {day2}?"), (b, f"{day2} should be sunny. Let's do it.")]
        summary = _pick(rng, (
            f"{a} and {b} move their picnic at {park} to {day2} because rain is forecast for {day}.",
            f"Because of rain on {day}, the picnic at {park} is on {day2}.",
        ))
    else:
        turns += [(a, "Then let's go bowling instead."), (b, "Good plan.")]
        summary = _pick(rng, (
            f"Rain is forecast on {day}, so {a} and {b} go bowling instead of a picnic at {park}.",
            f"{a} and {b} swap the {park} picnic for bowling because of the rain.",
        ))
    return Scene("picnic", turns, summary)


def _bank(rng: random.Random, a: str, b: str, c: str) -> Scene:
    country = _pick(rng, ("Spain", "Japan", "Brazil", "Canada", "Kenya"))
    turns = [(a, f"My card was blocked while I was in {country}."),
             (b, "That's a fraud protection measure. Can you confirm your date of birth?"),
             (a, f"Yes, the {rng.randint(1, 28)}th of {_pick(rng, ('March', 'July', 'October'))}."),
             (b, "Thank you. The card is unblocked now."),
             (a, "Can I tell you about trips in advance next time?"), (b, "Yes, in the app under travel notices.")]
    summary = _pick(rng, (
        f"{a}'s card was blocked in {country}; after verification {b} unblocks it and explains travel notices.",
        f"{b} unblocks {a}'s card, which fraud protection blocked during a trip to {country}.",
    ))
    return Scene("bank", turns, summary)


SCENARIOS: tuple[Scenario, ...] = (
    _reschedule, _dinner, _borrow, _car_repair, _doctor, _lost_item, _gift, _trip,
    _product_return, _homework, _interview, _apartment, _bug, _pet, _delivery, _project,
    _picnic, _bank,
)


def _layout(rng: random.Random, scene: Scene, a: str, b: str) -> str:
    """Lay a scene out as text, with an opener, optional small talk and an optional closer."""
    turns: list[tuple[str, str]] = [(a, _pick(rng, OPENERS).format(b=b))]
    if rng.random() < 0.5:
        turns.append((b, _pick(rng, ("Hi!", "Sure, what's up?", "Hey.", "Yes?"))))
    if rng.random() < 0.45:  # small talk before the point
        q, ans = SMALL_TALK[rng.randrange(len(SMALL_TALK))]
        turns += [(b, q), (a, ans)] if rng.random() < 0.5 else [(a, q), (b, ans)]
    turns += scene.turns
    if rng.random() < 0.25:  # a distractor after the point
        q, ans = SMALL_TALK[rng.randrange(len(SMALL_TALK))]
        turns += [(a, q), (b, ans)]
    if rng.random() < 0.6:
        thanks, reply = CLOSERS[rng.randrange(len(CLOSERS))]
        turns += [(a, thanks), (b, reply)]
    return "\n".join(f"{speaker}: {text}" for speaker, text in turns)


def generate_records(n: int, seed: int = SAMPLE_SEED) -> Iterator[dict[str, str]]:
    """Yield `n` dialogue/summary records, the same ones for the same seed."""
    if n < 1:
        raise ValueError(f"generate_records() needs n >= 1, got {n}")
    rng = random.Random(seed)
    for i in range(n):
        a, b, c = rng.sample(NAMES, 3)
        scene = SCENARIOS[rng.randrange(len(SCENARIOS))](rng, a, b, c)
        yield {"id": f"dlg-{seed}-{i:05d}", "topic": scene.topic,
               "dialogue": _layout(rng, scene, a, b), "summary": scene.summary}


def write_jsonl(records: Iterator[dict[str, str]] | list[dict[str, str]], path: Path) -> int:
    """Write records as JSON Lines; returns how many were written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def sample_path() -> Path:
    """Where the shipped sample lies inside the installed package."""
    return Path(str(resources.files("steps") / "resources" / SAMPLE_RESOURCE))
