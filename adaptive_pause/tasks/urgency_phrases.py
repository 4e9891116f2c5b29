"""Urgency phrasings with graded levels, combined with task prompts: the urgency estimator's data.

Owns: the phrase bank (7 levels from "take all the time you need" to "the reactor is about
to explode"; per level many templates in request wording and in context wording, each with
inline alternatives `{a|b|c}` and shared slots `{answer}`), its split *by template* into
train / validation / test (a held-out template's phrasings never occur in training; the
split is a pure function of the seed), and `PhrasedExample`s: a phrase rendered with a
random case and punctuation, placed before or after a task's prompt. Level L of
`LEVELS` stands for urgency L / (LEVELS - 1).

Must not: know about tokenizers or models. Only printable ASCII (the embedded character
tokenizer has no other characters and no newline).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Sequence

from .base import Example, Task

LEVELS = 7
SPLITS = ("train", "validation", "test")
PLACEMENTS = ("before", "after", "any")

# Slots shared by every level's templates: they vary the wording without saying how urgent it is.
SLOTS = {
    "answer": ["the answer", "an answer", "the result", "a reply", "the solution", "this", "it", "the number",
               "a response", "the value"],
    "solve": ["solve this", "work this out", "answer this", "figure this out", "compute this", "do this sum",
              "calculate this", "give me the answer", "tell me the result", "get this done"],
    "me": ["me", "us", "the team", "my boss", "the client"],
}

# (level, kind, template). kind: "request" (the asker says how fast) or "context" (the situation implies it).
TEMPLATES: list[tuple[int, str, str]] = [
    # 0: no time pressure at all; only accuracy matters
    (0, "request", "take all the time you {need|want|like}"),
    (0, "request", "there is {absolutely|really|truly} no rush {at all|whatsoever|here}"),
    (0, "request", "{no hurry|no rush} at all, {accuracy|getting it right|correctness} is all that matters"),
    (0, "request", "{think it through|go through it} {slowly|carefully|thoroughly}, time is no object"),
    (0, "request", "{please |}be as {slow|careful|thorough} as you {like|want|need}"),
    (0, "request", "{feel free to|you can} take {days|weeks|forever|as long as you like} on {answer}"),
    (0, "request", "{I am|I'm} in no hurry whatsoever, {just|only} get {answer} right"),
    (0, "request", "{don't|do not} {worry about|think about|care about} the time {at all|one bit}"),
    (0, "request", "{speed|time} {doesn't|does not} matter {at all|in the slightest}, {precision|accuracy} does"),
    (0, "request", "double-check everything, {there is|we have} no deadline"),
    (0, "request", "{spend|use} as {long|much time} as {needed|necessary|you need} to be {certain|sure|exact}"),
    (0, "request", "{leisurely|at your leisure}, {no clock is running|nobody is timing you}"),
    (0, "context", "this is for {an archive|a reference book|a long-term study|the permanent record}, so correctness "
                   "{beats|outranks|matters more than} speed"),
    (0, "context", "{we have|there are} {months|weeks|years} before {anyone|somebody} {needs|reads} {answer}"),
    (0, "context", "{I'm|I am} {retired|on a long vacation|on sabbatical} and {have|with} {endless|unlimited|all the} time"),
    (0, "context", "the {deadline|due date} is {next year|months away|not for ages}"),
    (0, "context", "{this|it} is {a hobby puzzle|for fun|idle curiosity}, {nobody|no one} is waiting on {it|answer}"),
    (0, "context", "{I|we} will {read|check} {answer} {sometime next month|in a few weeks|whenever}"),
    (0, "context", "nothing depends on {the timing|how long it takes}, {only|just} on being right"),
    (0, "context", "{a rainy Sunday|a slow afternoon|a quiet week} with {nothing|no plans} on the calendar"),

    # 1: calm; no rush, but someone will read it eventually
    (1, "request", "no rush"),
    (1, "request", "take your time"),
    (1, "request", "whenever you get a chance"),
    (1, "request", "{whenever|when} {it suits you|you are free|you are ready}"),
    (1, "request", "{no need|there's no need} to hurry"),
    (1, "request", "{at|in} your own pace"),
    (1, "request", "{get to it|do it} when you {can|have time}, {no pressure|it can wait}"),
    (1, "request", "{it|this} can wait {a while|a bit|until later}"),
    (1, "request", "{relax|easy does it}, {there's|there is} plenty of time"),
    (1, "request", "{no pressure|no stress}, {whenever|any time} is fine"),
    (1, "request", "{I'm|I am} not in a hurry for {answer}"),
    (1, "request", "{later|sometime this week} is {perfectly |}fine"),
    (1, "request", "{send|give} {me|us} {answer} {at some point|eventually}"),
    (1, "context", "{I'm|I am} planning {ahead|in advance} for next {month|quarter|term}"),
    (1, "context", "the report is due {in a couple of weeks|next month|at the end of the month}"),
    (1, "context", "{we|I} only need {answer} {for next week|by the weekend after next}"),
    (1, "context", "{just|only} {curious|wondering}, {it's|it is} not urgent"),
    (1, "context", "{I'm|I am} {preparing|drafting} notes for a {future|later} {meeting|lecture|class}"),
    (1, "context", "{nobody|no one} {needs|will use} {answer} {before|until} next week"),
    (1, "context", "{this|it} is {low priority|a low-priority item|on the back burner}"),

    # 2: relaxed; today is fine
    (2, "request", "when you have a {moment|minute|spare minute}"),
    (2, "request", "sometime today {is fine|works|would be good}"),
    (2, "request", "{by|before} the end of the day, {please|if possible}"),
    (2, "request", "{when|once} you {get around to it|have a free moment} today"),
    (2, "request", "{reasonably|fairly} {relaxed|calm}, {but|though} {today|later today} please"),
    (2, "request", "{no big hurry|not a big rush}, {but|though} {I'd like|I would like} {answer} today"),
    (2, "request", "{could you|can you} {look at|handle} this {later today|this afternoon}"),
    (2, "request", "{in|within} the next few hours {is fine|is okay|works}"),
    (2, "request", "{get back to|reply to} {me|us} {later today|this evening|by tonight}"),
    (2, "request", "{after lunch|this afternoon} is {soon enough|fine}"),
    (2, "request", "{some|a little} time is fine, {but|just} {don't|do not} forget"),
    (2, "context", "the {meeting|review|presentation} is tomorrow {morning|afternoon}"),
    (2, "context", "{I|we} need {answer} for {tomorrow's|tomorrow morning's} {report|plan|briefing}"),
    (2, "context", "the {form|order|paperwork} {has to|must} go out by {tonight|this evening}"),
    (2, "context", "{my|our} {manager|teacher|client} {asked|wants} {it|answer} by {end of day|close of business}"),
    (2, "context", "{I'll|I will} {check|read} {answer} {after dinner|tonight|before bed}"),
    (2, "context", "{the|our} {shop|office|store} closes {this evening|at six|tonight}"),
    (2, "context", "{a few|several} hours {remain|are left} before {the cut-off|the deadline}"),

    # 3: moderate; soon, at a normal pace
    (3, "request", "{reasonably|fairly|pretty} soon, please"),
    (3, "request", "at a {normal|steady|regular|moderate} pace"),
    (3, "request", "within the {hour|next hour}, {please|if you can}"),
    (3, "request", "{don't|do not} {dawdle|take too long}, {but|though} {no need to|you needn't} rush"),
    (3, "request", "{a timely|a prompt-ish|a reasonably quick} {answer|reply} {would be good|is wanted}"),
    (3, "request", "{somewhat|moderately|a bit} time-sensitive"),
    (3, "request", "{soonish|in good time}, {please|thanks}"),
    (3, "request", "{balance|weigh} speed and {accuracy|care} {evenly|equally}"),
    (3, "request", "{not urgent|not an emergency}, {but|though} {sooner|earlier} is better"),
    (3, "request", "{try to|aim to} {reply|answer} {in the next|within} {half hour|thirty minutes|hour}"),
    (3, "request", "{the usual|a normal} turnaround {is fine|please}"),
    (3, "context", "the client is {waiting on|expecting} {answer} later {today|this hour}"),
    (3, "context", "{I have|we have} a {call|meeting} {in an hour|within the hour}"),
    (3, "context", "{the|our} {queue|backlog} is {building up|growing} {a bit|slowly}"),
    (3, "context", "{we|I} {hope|want} to {finish|wrap up} before lunch"),
    (3, "context", "{people|the others} will {need|want} {answer} {in a while|fairly soon}"),
    (3, "context", "{the|my} {bus|shuttle} {leaves|comes} in {an hour|about an hour}"),
    (3, "context", "{a|the} {colleague|customer|student} is {waiting|on hold} {but|and} {patient|not upset}"),

    # 4: brisk; quickly, shortly
    (4, "request", "quickly, please"),
    (4, "request", "{soon|shortly}, please, {I need|we need} {answer}"),
    (4, "request", "{be|please be} {quick|brief|snappy} about it"),
    (4, "request", "{need|I need|we need} {answer} {shortly|in a few minutes|pretty quickly}"),
    (4, "request", "{make it|keep it} {fast|quick|short}"),
    (4, "request", "{can you|could you} {hurry|speed} {up|it up} a little"),
    (4, "request", "{a quick|a fast|a speedy} {answer|reply|turnaround} {please|would help}"),
    (4, "request", "{in|within} {five|ten|a few} minutes, {please|if you can}"),
    (4, "request", "{without|no} {delay|dawdling}, {please|thanks}"),
    (4, "request", "{time is|we are} {a bit |}short, {so |}{be quick|keep it quick}"),
    (4, "request", "{pick up|step up} the pace"),
    (4, "context", "my {train|flight|bus} {leaves|boards|departs} in {ten|fifteen|twenty} minutes"),
    (4, "context", "the {meeting|call|class} starts in {five|ten|a few} minutes"),
    (4, "context", "{the|a} customer is {waiting at|standing at} the {counter|desk|door}"),
    (4, "context", "{I'm|I am} {on a short break|between meetings|about to go in}"),
    (4, "context", "{the|our} {store|office|library} closes in {ten|fifteen} minutes"),
    (4, "context", "the {kettle|timer|oven} {is about to go off|will ring soon}"),
    (4, "context", "{my|the} phone battery is at {five|three} percent"),

    # 5: urgent; now, ASAP
    (5, "request", "quick"),
    (5, "request", "ASAP"),
    (5, "request", "hurry"),
    (5, "request", "{right now|now}, please"),
    (5, "request", "{as soon as possible|asap}, {please|no delays}"),
    (5, "request", "{fast|quick|hurry}, {I need|we need} {answer} {now|right away|immediately}"),
    (5, "request", "{urgent|urgently|this is urgent}"),
    (5, "request", "{no time|there is no time} to {think|waste|lose}"),
    (5, "request", "{just|only} give {me|us} {answer}, {fast|quickly|now}"),
    (5, "request", "{need|I need} {answer} {this minute|right this second|straight away}"),
    (5, "request", "{step on it|chop chop|snap to it}"),
    (5, "request", "{seconds|every second} {count|counts}, {be quick|hurry}"),
    (5, "context", "the {boss|director|inspector} is {standing|waiting} {at my desk|behind me|right here}"),
    (5, "context", "we go live in {two|three|a couple of} minutes"),
    (5, "context", "{I'm|I am} {on stage|on air|live on camera} {right now|this moment}"),
    (5, "context", "the {exam|test|quiz} {ends|is over} in {one|two} minutes"),
    (5, "context", "{the|my} {taxi|cab|ride} is {already |}{here|outside|honking}"),
    (5, "context", "{the|our} {server|site|app} is {down|crashing} and {customers|users} are {waiting|angry}"),
    (5, "context", "{the|a} {buzzer|clock|countdown} {is ticking|has started}"),

    # 6: emergency; only speed matters
    (6, "request", "you have {two|three|five} seconds"),
    (6, "request", "{emergency|EMERGENCY}, {answer|reply} {immediately|instantly|this instant}"),
    (6, "request", "{immediately|instantly|this instant}, {no|not a} {second|moment} to lose"),
    (6, "request", "{answer|reply} {now or never|before it is too late}"),
    (6, "request", "{life or death|a matter of life and death}, {be|go} {fast|instant}"),
    (6, "request", "{no time at all|zero time}, {answer|reply} {now|instantly}"),
    (6, "request", "{mayday|sos|red alert}, {I need|we need} {answer} {instantly|this second}"),
    (6, "request", "{faster than|quicker than} {a heartbeat|a blink|lightning}"),
    (6, "request", "{drop everything|stop everything} and {answer|reply} {now|this second}"),
    (6, "request", "{every|each} {millisecond|split second} {counts|matters}"),
    (6, "request", "{it's|it is} {critical|an emergency}, {instantly|immediately|right this second}"),
    (6, "context", "the {reactor|boiler|engine|core} is about to {explode|blow up|melt down}"),
    (6, "context", "the {building|house|lab|plane} is on fire"),
    (6, "context", "the patient is {crashing|coding|flatlining}"),
    (6, "context", "the bomb {goes off|detonates|explodes} in {ten|five|three} seconds"),
    (6, "context", "{we are|the ship is|the car is} {sinking|going down|about to crash}"),
    (6, "context", "the {dam|bridge|roof} is {collapsing|about to give way|breaking}"),
    (6, "context", "{alarms|sirens} are {blaring|going off} and {the gas|the water|the fire} is rising"),
    (6, "context", "{the|our} {air|oxygen} runs out in {seconds|a few seconds|moments}"),

    # Session 7: a second block per level, so that each held-out template has neighbours in training that say
    # the same degree in other words (synonyms, negations, time spans, registers).
    (0, "request", "{no deadline|no time limit|no clock} {whatsoever|at all}, {so |}{be meticulous|be exhaustive}"),
    (0, "request", "{mull it over|ponder it|sleep on it} for as long as you {wish|please|want}"),
    (0, "request", "{I'd rather|I would rather} {wait a year|wait forever} than get a wrong {answer|number}"),
    (0, "request", "{patience is|time is} {unlimited|infinite|endless} {here|on this one}, {be careful|check twice}"),
    (0, "request", "{take|use} {weeks|months|all year} if {you must|that's what it takes|you need to}"),
    (0, "request", "{there's|there is} {zero|no} {pressure|urgency} {here|on this|whatsoever}, {think deeply|think hard}"),
    (0, "request", "{never mind|forget about|ignore} the clock, {only|just} {get it right|be correct}"),
    (0, "request", "{slow and steady|slowly and carefully|carefully and slowly}, {no matter|however} how long it takes"),
    (0, "request", "{it|this} {does not|doesn't} {need to be|have to be} {fast|quick|soon} {at all|in any way}"),
    (0, "request", "{precision|correctness|accuracy} {first|above all}, {time|speed} {is irrelevant|is no concern}"),
    (0, "context", "{this|it} {goes into|is for} a {textbook|history book|museum catalogue} {nobody will open|no one will read} for years"),
    (0, "context", "{I'm|I am} {writing|putting together} a {thesis|book|long report} due {in two years|next decade|eventually}"),
    (0, "context", "{we|I} {are|am} {stuck|snowed in} {at home|in a cabin} {all winter|for months} with nothing to do"),
    (0, "context", "the {time capsule|archive box|vault} {won't|will not} be {opened|read} for {decades|fifty years}"),
    (0, "context", "{it's|it is} a {thought experiment|puzzle for a lazy Sunday|pastime}, {the clock|time} {doesn't|does not} matter"),
    (0, "context", "{nobody|no one} {is waiting|will ever wait} for {answer}, {so|and} {it's|it is} all about being right"),
    (0, "context", "{I have|we have} {the whole summer|the entire year|all the time in the world}"),

    (1, "request", "{whenever is fine|whenever works}, {honestly|really}"),
    (1, "request", "{not urgent|nothing urgent}, {get to it|look at it} {when you can|when convenient}"),
    (1, "request", "{don't|do not} {rush|hurry} on {my|our} account"),
    (1, "request", "{no biggie|no worries}, {later|sometime} is fine"),
    (1, "request", "{no need to|you don't have to} {drop everything|hurry} for this"),
    (1, "request", "{easy|gentle} pace, {please|thanks}, {nothing|it's nothing} pressing"),
    (1, "request", "{in a day or two|over the next few days|sometime this week} {works|is fine|is good}"),
    (1, "request", "{at|on} your {convenience|schedule}, {no|zero} {hurry|rush}"),
    (1, "request", "{a few|two or three} days {is fine|are fine|is okay} for {answer}"),
    (1, "request", "{calmly|in your own time}, {please|thanks}"),
    (1, "context", "{it's|it is} for a {newsletter|blog post|report} going out {next week|in a few days}"),
    (1, "context", "{I|we} {won't|will not} {look at|need} {answer} {until Monday|for a few days|before the weekend}"),
    (1, "context", "the {trip|holiday|event} is {next month|weeks away|a few weeks off}"),
    (1, "context", "{I'm|I am} {tidying up|sorting out} {some old notes|my records|the files}, {nothing|it's not} urgent"),
    (1, "context", "{this|it} {sits|is} {near the bottom|at the bottom} of {my|our} {to-do list|list}"),
    (1, "context", "{the|our} {next|coming} {review|audit|check-in} is {weeks|a few weeks} away"),

    (2, "request", "{any time|anytime} {today|before tonight} {is fine|works|is good}"),
    (2, "request", "{before|by} {five|six|the end of the working day}, {please|if you can}"),
    (2, "request", "{today|by today}, {but|though} {no need to|don't} {rush|hurry} {it|right now}"),
    (2, "request", "{when you're|once you're} {done with|finished with} {your other work|lunch}, {please|thanks}"),
    (2, "request", "{in|within} {a few|three or four|a couple of} hours {is fine|works|please}"),
    (2, "request", "{not right now|not this minute}, {but|though} {today|later today} {please|would be nice}"),
    (2, "request", "{at some point|sometime} this {afternoon|evening}, {please|thanks}"),
    (2, "request", "{today-ish|later on today} {is fine|works}"),
    (2, "request", "{no real|not much} {rush|hurry}, {I'll|I will} {need|want} {answer} {by tonight|tonight}"),
    (2, "request", "{reply|answer} {at a relaxed pace|without stress}, {today|by evening} {is fine|will do}"),
    (2, "context", "{I'll|I will} {use|need} {answer} {in tomorrow's|for tomorrow's} {lesson|meeting|call}"),
    (2, "context", "the {package|letter|parcel} {ships|goes out} {tomorrow|first thing tomorrow}"),
    (2, "context", "{we|I} {meet|see} the {client|team|board} {tomorrow|in the morning}"),
    (2, "context", "the {store|bank|post office} {is open|stays open} {until tonight|a few more hours}"),
    (2, "context", "{I'm|I am} {going to|gonna} {read|check} {answer} {on the train home|this evening|later tonight}"),
    (2, "context", "{dinner|the party|the game} {is|starts} {tonight|this evening}, {I|we} {need|want} {answer} before"),

    (3, "request", "{in|within} {forty-five|thirty|forty} minutes {or so|or thereabouts|or less}"),
    (3, "request", "{not a rush job|not a rush}, {but|though} {don't|do not} {sit on it|leave it too long}"),
    (3, "request", "{fairly|reasonably} {prompt|quick}, {but|though} {accuracy|getting it right} {matters too|still counts}"),
    (3, "request", "{soon|promptly}, {though|but} not {frantically|in a panic}"),
    (3, "request", "{an ordinary|a standard|a regular} {response time|turnaround} {please|is fine}"),
    (3, "request", "{no emergency|nothing dramatic}, {but|though} {please|do} {keep it moving|keep things moving}"),
    (3, "request", "{reply|answer} {at a reasonable|at a sensible} {speed|pace}"),
    (3, "request", "{sooner rather than later|better soon than late}, {but|though} {no|not a} panic"),
    (3, "request", "{an hour|about an hour} {from now|or so} {is fine|works}"),
    (3, "request", "{medium|moderate} {priority|urgency}, {please|thanks}"),
    (3, "context", "{lunch|the break} {ends|is over} in {an hour|about an hour}"),
    (3, "context", "{the|our} {team|group} {wants|expects} {answer} {before noon|by mid-morning|this morning}"),
    (3, "context", "{I'm|I am} {waiting|sitting} {in a queue|in line|at the dentist's}, {it'll|it will} be {a while|half an hour}"),
    (3, "context", "the {caller|visitor|customer} {said|told us} {they can wait|they'd wait} {a bit|half an hour}"),
    (3, "context", "{we|I} {have|got} {an hour or so|about forty minutes} {before|until} the {next session|handover}"),
    (3, "context", "the {pizza|food|delivery} {arrives|comes} in {half an hour|about an hour}"),

    (4, "request", "{fast|quickly}, {please|thanks}, {I'm|I am} {a bit pressed|short on time}"),
    (4, "request", "{hurry along|move along|get a move on}, {please|thanks}"),
    (4, "request", "{speedy|brisk|rapid} {reply|answer|response}, {please|thanks}"),
    (4, "request", "{in|within} {a couple of|two or three} minutes, {please|if possible}"),
    (4, "request", "{need|want} {answer} {promptly|briskly}, {no|without} {lingering|fuss}"),
    (4, "request", "{quick|short} {turnaround|response}, {we're|we are} {on a clock|pressed for time}"),
    (4, "request", "{time is|minutes are} {tight|short}, {so|please} {move|be} {quickly|fast}"),
    (4, "request", "{don't|do not} {keep me|keep us} waiting {long|too long}"),
    (4, "request", "{speed it up|speed things up|get moving}, {please|if you can}"),
    (4, "request", "{fairly|pretty} urgent, {please|so} {be quick|go fast}"),
    (4, "context", "{my|our} {ride|lift|uber} {arrives|gets here} in {five|ten|a few} minutes"),
    (4, "context", "{the|my} {break|recess|intermission} {ends|is over} in {a few|ten|five} minutes"),
    (4, "context", "{the|our} {guests|visitors} {arrive|get here} in {ten|fifteen|a few} minutes"),
    (4, "context", "{I|we} {have|got} {ten|fifteen|a few} minutes {before|until} {the lecture|my shift|the call}"),
    (4, "context", "the {parking meter|meter|ticket} {runs out|expires} in {a few|ten} minutes"),
    (4, "context", "{people|a line|a queue} {is|are} {forming|building} {behind me|at the counter}"),

    (5, "request", "{pronto|on the double|double time}"),
    (5, "request", "{immediately|right away}, {please|thanks}, it's urgent"),
    (5, "request", "{need|I need|we need} {answer} {this instant|at once|now now now}"),
    (5, "request", "{very|extremely|really} urgent, {reply|answer} {now|right now|at once}"),
    (5, "request", "{quickly|fast}, {there's|there is} {hardly|barely} any time"),
    (5, "request", "{top priority|highest priority}, {right now|immediately}"),
    (5, "request", "{hurry up|be quick}, {I|we} {can't|cannot} wait"),
    (5, "request", "{I|we} need {answer} {within a minute|in under a minute|in one minute}"),
    (5, "request", "{rush|rush job|rush order}, {please|now}"),
    (5, "request", "{we're|we are} {out of|almost out of} time, {answer|reply} {now|fast}"),
    (5, "context", "the {plane|train|ferry} {doors are closing|is leaving} {right now|as we speak}"),
    (5, "context", "{the|our} {manager|boss|client} is on the {phone|line} {waiting|demanding} {answer} {now|this minute}"),
    (5, "context", "{the|our} {deadline|cut-off} is {in one minute|in sixty seconds|right now}"),
    (5, "context", "{the|my} {auction|bid|sale} {closes|ends} in {a minute|under a minute|thirty seconds}"),
    (5, "context", "{the|a} {referee|judge|teacher} is {collecting|taking} the {papers|answers} {now|right now}"),
    (5, "context", "{the|our} {systems|payments} are {failing|down} {and|while} {money|orders} {is|are} {being lost|piling up}"),

    (6, "request", "{INSTANTLY|NOW NOW NOW|RIGHT NOW}, {no|zero} {delay|thinking}"),
    (6, "request", "{in|within} {a split second|one second|a heartbeat}, {or|else} {it's over|we're done}"),
    (6, "request", "{lives|people's lives} {depend|hang} on {this|answer}, {answer|reply} {instantly|now}"),
    (6, "request", "{absolutely no|not a single} {second|moment|instant} to {spare|waste}"),
    (6, "request", "{the fastest answer possible|the fastest reply you can}, {nothing else|speed is all that} matters"),
    (6, "request", "{code red|maximum urgency|highest alert}, {answer|reply} {this second|immediately}"),
    (6, "request", "{stat|STAT}, {no|not a} {second|moment} to lose"),
    (6, "request", "{reply|answer} {before I|before we} {blink|can breathe}"),
    (6, "request", "{forget|skip} {checking|accuracy|thinking}, {just|only} {answer|reply} {instantly|this second}"),
    (6, "request", "{time's|time is} {up|out}, {answer|reply} {this instant|immediately}"),
    (6, "context", "the {train|truck|car} is {heading straight for|about to hit} {us|the crowd|the children}"),
    (6, "context", "{we're|we are} {falling|in free fall|going down} and the {parachute|chute} {won't|will not} open"),
    (6, "context", "the {fuse|wire|countdown} {is burning|is at zero|has two seconds left}"),
    (6, "context", "{someone|a child|a man} is {drowning|choking|not breathing} {right now|this second}"),
    (6, "context", "the {missile|rocket|asteroid} {hits|impacts} in {seconds|five seconds|moments}"),
    (6, "context", "{the|our} {pressure|temperature} {is off the charts|is at critical} and {climbing|rising} {by the second|fast}"),
    (0, "request", "{think carefully|reflect carefully|consider it carefully}, {there's|there is} {no time pressure|no pressure of time}"),
    (0, "request", "{I|we} {don't|do not} need {answer} {any time soon|soon|in a hurry}, {just|only} {correct|right}"),
    (0, "request", "{be|stay} {patient|unhurried} and {thorough|careful}, {the timing|the wait} {is not|isn't} an issue"),
    (0, "request", "{whatever it takes|however long it needs}, {I want|we want} {answer} {exactly right|perfect}"),
    (0, "request", "{no hurry whatsoever|absolutely no hurry}, {we|I} {can|could} wait {months|all year}"),
    (0, "context", "{the|our} {results|figures} {won't|will not} be {needed|published} until {next year|the year after}"),
    (0, "context", "{I'm|I am} {on a long retreat|at a quiet monastery|on a slow cruise} {with|and have} {no|zero} {deadlines|appointments}"),
    (0, "context", "{it's|it is} {an open-ended|a long-term} {research|study} project {with|and has} no due date"),

    (1, "request", "{no pressure|no hurry} on {this|this one}, {just|only} {when|whenever} {convenient|you can}"),
    (1, "request", "{sometime|some time} {next week|in the coming days} {is fine|works|is soon enough}"),
    (1, "request", "{it's|it is} {not|nothing} {pressing|time-critical}, {so |}{relax|take it easy}"),
    (1, "request", "{reply|answer} {at your leisure|when it suits you}, {thanks|please}"),
    (1, "request", "{no deadline really|the deadline is loose}, {a few days|some days} {is fine|is okay}"),
    (1, "context", "{I'm|I am} {collecting|gathering} {ideas|numbers} for {a plan|a project} {next month|later this month}"),
    (1, "context", "{the|our} {bill|invoice|payment} {isn't|is not} due {for a week|until next week|for ten days}"),
    (1, "context", "{we're|we are} {just|only} {brainstorming|planning} {for later|for the weeks ahead}"),

    (2, "request", "{I'd like|I would like|I'll need} {answer} {at some point today|later in the day}"),
    (2, "request", "{this evening|tonight} {at the latest|is the deadline}, {no need to|don't} {rush|hurry} {now|yet}"),
    (2, "request", "{a few hours|several hours} from now {is fine|will do}"),
    (2, "request", "{please|kindly} {handle|do} this {today|before the day is out}"),
    (2, "request", "{when|once} you {have|get} a {free slot|gap|quiet moment} {today|this afternoon}"),
    (2, "context", "{I|we} {fly|leave|travel} {tomorrow morning|tomorrow}, {so |}{answer|it} {is needed|should come} tonight"),
    (2, "context", "the {school|office|clinic} {closes|shuts} {at five|in a few hours}"),
    (2, "context", "{my|the} {essay|homework|report} is due {tomorrow|first thing tomorrow}"),

    (3, "request", "{respond|reply} {in a timely manner|in good time}, {please|thanks}"),
    (3, "request", "{somewhat|a little} {urgent|pressing}, {within|in} {the hour|an hour} {please|is fine}"),
    (3, "request", "{not a crisis|no crisis}, {but|though} {I'd|I would} {like|appreciate} {answer} {soon|before long}"),
    (3, "request", "{a reasonable|an average|a typical} {pace|speed} is {fine|good}, {neither|not} {slow|too slow} nor {rushed|frantic}"),
    (3, "request", "{get to it|look at it} {shortly|soon}, {but|though} {finish|complete} what you're doing first"),
    (3, "context", "{the|our} {meeting|class|shift} {starts|begins} in {about an hour|an hour or so|under an hour}"),
    (3, "context", "{I|we} {have|got} {some|a bit of} time, {maybe|about} {half an hour|forty minutes}"),
    (3, "context", "{the|a} {friend|colleague|neighbour} is {coming over|dropping by} in {an hour|about an hour}"),

    (4, "request", "{as fast as|as quickly as} {you can|possible}, {please|thanks}"),
    (4, "request", "{be|please be} {quick|fast}, {I'm|I am} in a {hurry|rush}"),
    (4, "request", "{time is of the essence|time matters here}, {please|so} {be quick|hurry}"),
    (4, "request", "{in the next|within the next} {few|five|ten} minutes, {please|if you would}"),
    (4, "request", "{need|want} {answer} {fairly|pretty} {fast|quickly}, {no|not much} time to waste"),
    (4, "context", "{the|our} {bus|tram|coach} {is coming|pulls up} in {a few|five|ten} minutes"),
    (4, "context", "{I'm|I am} {walking into|heading into|about to enter} a {meeting|lecture|interview} {shortly|soon}"),
    (4, "context", "{the|my} {oven|laptop|phone} {timer|battery|alarm} {goes off|dies|rings} in {a few|five|ten} minutes"),

    (5, "request", "{I need this yesterday|we needed this yesterday}"),
    (5, "request", "{urgent|URGENT}: {answer|reply} {right now|immediately|at once}"),
    (5, "request", "{hurry up|quick}, {I'm|I am} {in a real rush|in a big hurry|seriously pressed}"),
    (5, "request", "{time-critical|time critical}, {answer|reply} {now|immediately}"),
    (5, "request", "{right this minute|this very minute}, {please|no excuses}"),
    (5, "context", "{the|our} {boss|client|editor} {needs|wants} {answer} {in sixty seconds|within the minute|before the minute is up}"),
    (5, "context", "the {doors|gates} {close|shut} in {a minute|one minute|under a minute}"),
    (5, "context", "{we're|we are} {on|live on} {the air|air|stage} in {a minute|under a minute|thirty seconds}"),

    (6, "request", "{this is|it's} {a|an} {emergency|crisis}, {answer|reply} {in a split second|instantly}"),
    (6, "request", "{life|lives} {at stake|on the line}, {no|zero} time, {answer|reply} {now|instantly}"),
    (6, "request", "{within|in} {one|two} seconds {or|else} {it's too late|everything is lost}"),
    (6, "request", "{panic|alarm}, {we|I} need {answer} {this very second|instantly|right this instant}"),
    (6, "request", "{mayday|sos|help help}, {answer|reply} {instantly|immediately}, {no|not a} second to {spare|lose}"),
    (6, "context", "the {ship|plane|bus} {is about to crash|is going down} {in seconds|any second}"),
    (6, "context", "the {flood|fire|gas leak} {will reach|is about to reach} {us|the children|the control room} {in seconds|any second now}"),
    (6, "context", "{he|she|the patient} {has|has only} {seconds|moments} to live"),
]

# Phrasings written apart from the templates (no template renders any of them), for checking a trained estimator
# on wording the bank's authors did not template, beside the bank's own held-out templates. Never trained on:
# no split of `UrgencyPhraseBank` contains them. (level, phrase)
WRITTEN_APART: list[tuple[int, str]] = [
    (0, "Please be thorough, we have all year"), (0, "Accuracy is everything here; the clock does not exist"),
    (0, "No deadline on this one, work carefully"), (0, "I can wait as long as it takes for the right number"),
    (0, "Completely unhurried, just be exact"), (0, "Spend ages on it if you like, only correctness counts"),
    (1, "Not pressing, whenever you're free"), (1, "Sometime in the next few days would be great"),
    (1, "It's not urgent, no hurry"), (1, "Low priority, get to it when you can"),
    (1, "Take it easy, this can wait until next week"), (1, "No rush on this, really"),
    (2, "Could I have it by this evening?"), (2, "Before I leave the office today, please"),
    (2, "Some time this afternoon is fine"), (2, "I need it for a meeting tomorrow morning"),
    (2, "No big rush, but today please"), (2, "By close of business today"),
    (3, "Within the hour would be nice"), (3, "Fairly soon please, but no panic"),
    (3, "I'd like it in the next half hour or so"), (3, "Moderately urgent"),
    (3, "Don't take forever, but there's no emergency"), (3, "The client calls back in about an hour"),
    (4, "Give me a number within five minutes or so"), (4, "Be quick please, my meeting starts in ten minutes"),
    (4, "Hurry a little, I'm short on time"), (4, "Fast answer please"),
    (4, "Quickly, the shop closes in a quarter of an hour"), (4, "Can you speed up, people are waiting"),
    (5, "I need it right now"), (5, "Urgent! Respond straight away"), (5, "ASAP please, no time"),
    (5, "Hurry, the boss is asking for it this minute"), (5, "Quick, quick, we go live any second now"),
    (5, "Right away please, it is urgent"),
    (6, "Emergency! Answer this second, lives are at stake"), (6, "The building is collapsing, answer instantly"),
    (6, "We have three seconds before impact"), (6, "Mayday mayday, reply now"),
    (6, "The reactor is melting down, no time at all"), (6, "Someone is dying, answer instantly"),
]

_ALTERNATIVES = re.compile(r"\{([^{}]*)\}")
_SEPARATORS_BEFORE = (" ", ": ", ". ", ", ", " - ", "! ", "; ")
_ENDINGS = ("", ".", "!", "...", "?")


def level_urgency(level: int) -> float:
    """The urgency a level stands for: level / (LEVELS - 1)."""
    if not 0 <= level < LEVELS:
        raise ValueError(f"level: must be in 0..{LEVELS - 1}, got {level}")
    return level / (LEVELS - 1)


def render(template: str, rng: random.Random) -> str:
    """One surface form of `template`: each `{a|b}` picks an alternative, each `{slot}` a shared filler."""
    def pick(match: re.Match) -> str:
        body = match.group(1)
        options = SLOTS[body] if body in SLOTS else body.split("|")
        return rng.choice(options)

    return " ".join(_ALTERNATIVES.sub(pick, template).split())


@dataclass(frozen=True)
class Phrasing:
    level: int
    kind: str  # request | context
    template: str


@dataclass(frozen=True)
class PhrasedExample:
    prompt: str  # the task prompt with the phrase before or after it
    answer: str
    level: int
    urgency: float  # level / (LEVELS - 1)
    phrase: str  # the rendered phrase, as it appears in the prompt
    template: str  # the phrasing it was rendered from
    kind: str  # request | context
    placement: str  # before | after
    task_prompt: str
    difficulty: int
    task: str


class UrgencyPhraseBank:
    """The templates split by phrasing: per level and kind, a seeded share goes to validation and to test.

    Every level keeps at least one template in every split, so each split covers the whole scale.
    """

    def __init__(self, seed: int = 0, validation_fraction: float = 0.2, test_fraction: float = 0.2,
                 templates: Sequence[tuple[int, str, str]] = TEMPLATES):
        if not (0 < validation_fraction and 0 < test_fraction and validation_fraction + test_fraction < 1):
            raise ValueError(f"validation_fraction, test_fraction: need both > 0 and their sum < 1, got "
                             f"{validation_fraction}, {test_fraction}")
        self.seed = seed
        self.splits: dict[str, list[Phrasing]] = {name: [] for name in SPLITS}
        for level in range(LEVELS):
            group = [Phrasing(lv, kind, t) for lv, kind, t in templates if lv == level]
            if len(group) < 3:
                raise ValueError(f"templates: level {level} needs at least 3 templates (one per split), "
                                 f"got {len(group)}")
            random.Random(f"urgency-split:{seed}:{level}").shuffle(group)
            n_val = max(1, round(validation_fraction * len(group)))
            n_test = max(1, round(test_fraction * len(group)))
            self.splits["validation"] += group[:n_val]
            self.splits["test"] += group[n_val:n_val + n_test]
            self.splits["train"] += group[n_val + n_test:]

    def phrasings(self, split: str, level: int | None = None) -> list[Phrasing]:
        if split not in SPLITS:
            raise ValueError(f"split: must be one of {SPLITS}, got {split!r}")
        return [p for p in self.splits[split] if level is None or p.level == level]

    def sample(self, rng: random.Random, split: str, example: Example, level: int | None = None,
               placement: str = "any") -> PhrasedExample:
        """`example`'s prompt with a phrase of `split` (at `level`, else a uniform level) before or after it."""
        if placement not in PLACEMENTS:
            raise ValueError(f"placement: must be one of {PLACEMENTS}, got {placement!r}")
        level = rng.randrange(LEVELS) if level is None else level
        phrasing = rng.choice(self.phrasings(split, level))
        phrase = render(phrasing.template, rng)
        case = rng.random()
        # Case and punctuation are drawn the same way at every level: the estimator must read the words.
        if case < 0.15:
            phrase = phrase.upper()
        elif case < 0.3:
            phrase = phrase.lower()
        else:
            phrase = phrase[0].upper() + phrase[1:]
        side = rng.choice(("before", "after")) if placement == "any" else placement
        if side == "before":
            text = phrase + rng.choice(_SEPARATORS_BEFORE) + example.prompt
        else:
            text = example.prompt + " " + phrase + rng.choice(_ENDINGS)
        return PhrasedExample(text, example.answer, level, level_urgency(level), phrase, phrasing.template,
                              phrasing.kind, side, example.prompt, example.difficulty, example.task)

    def examples(self, tasks: Sequence[Task], split: str, n: int, seed: int, placement: str = "any",
                 levels: Sequence[int] | None = None) -> list[PhrasedExample]:
        """`n` phrased examples, a pure function of (bank seed, split, n, seed, placement, levels); levels cycle
        so that every level is equally represented."""
        if not tasks:
            raise ValueError("tasks: need at least one task")
        levels = list(range(LEVELS)) if levels is None else list(levels)
        rng = random.Random(f"urgency-examples:{self.seed}:{split}:{seed}:{placement}")
        out = []
        for i in range(n):
            task = tasks[rng.randrange(len(tasks))]
            out.append(self.sample(rng, split, task.sample(rng), levels[i % len(levels)], placement))
        return out
