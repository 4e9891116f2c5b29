"""The urgency phrase bank's third block: templates written for composition (session 11).

Owns: `COMPOSED` ((level, kind, template), the format of `urgency_templates.TEMPLATES`, which appends it). Per
level the degree is said by negating the other end of the scale ("don't make me wait", "no need to be quick"),
by a hedge or an intensifier on a shared word ("slightly" / "very" / "extremely" urgent), by "X but Y" (the
second clause sets the degree), by "nothing but speed" / "nothing but accuracy", and by time spans in many
units. Earlier blocks mark calm levels with nearly every negation; without these, an estimator learns "a
negation means calm" and reads "don't keep me waiting long" as calm.

Must not: hold logic. Only printable ASCII.
"""

from __future__ import annotations

COMPOSED: list[tuple[int, str, str]] = [
    (0, "request", "{speed|being fast|a quick answer} {is|really is} {the least|the last} of {my|our}"
                   " {concerns|worries}"),
    (0, "request", "{don't|do not|never} {hurry|rush|speed up}"
                   " {for any reason|whatever happens}, {just|only} be {right|exact}"),
    (0, "request", "{nothing|not a thing} {matters|counts} {but|except} {getting it right|being correct|accuracy}"),
    (0, "request", "{it|this} {doesn't|does not|won't} {matter|hurt} if {it|this} takes {a month|all month|a year}"),
    (0, "request", "{no|not the slightest|zero} {need|reason} to be {quick|fast|speedy} {at all|whatsoever}"),
    (0, "request", "{I'm|I am|we're|we are} {not|never} {in a hurry|in a rush|pressed}"
                   " {at all|in the least}, {ever|so take ages}"),
    (0, "request", "{the|a} {slowest|most careful|most thorough} {answer|reply} {is|would be} {best|ideal|perfect}"),
    (0, "request", "{answer|reply} {in|within} {a year|a few months|ten years}, {that's|that is} {fine|plenty}"),
    (0, "request", "{take|spend} {an eternity|a lifetime|all the time there is} {if|when} {you like|needed}"),
    (0, "request", "{not urgent in the slightest|the opposite of urgent}, {be|stay} {meticulous|careful}"),
    (0, "request", "{hurrying|rushing|speed} {would|could} {only |}{spoil|ruin} it, {go slow|be careful|be slow}"),
    (0, "context", "{no one|nobody} {will|is going to} {ask for|look at} {answer} {for years|for ages|this decade}"),
    (0, "context", "{there is|there's} {no|not any} {deadline|due date|clock} {on|for} {this|it}, {ever|none at all}"),
    (0, "context", "{it's|it is} {for|part of} {a|an} {encyclopedia|almanac|centuries-old archive}"
                   " {project|entry}, {take|use} {months|ages}"),
    (0, "context", "{the|our} {project|study|book} {runs|lasts|continues} {for|another} {several|many}"
                   " {years|decades}"),
    (0, "context", "{I|we} {won't|will not} {need|use|read} {answer} {for a long, long time|for ages|until next year}"),
    (0, "context", "{we're|we are} {in|on} {no hurry|no schedule|no timetable}"
                   " {at all|of any kind}, {it's|it is} a {slow|long} {project|job}"),

    (1, "request", "{I'm|I am|we're|we are}"
                   " not {in a rush|in a hurry|pressed}, {a few days|this week|next week} is fine"),
    (1, "request", "{no|not any} {urgency|hurry|rush}, {just|only} {sometime|some time} {this week|in the next days}"),
    (1, "request", "{it|this} {isn't|is not} {urgent|pressing|a priority} {at all|really}, {get to it|answer}"
                   " {later|eventually}"),
    (1, "request", "{don't|do not} {bother|worry about} {hurrying|rushing|being fast}, {in a few days|next week}"
                   " {is fine|works}"),
    (1, "request", "{a bit|a little|slightly} {later|delayed} is {fine|okay}, {no|not a} {problem|worry}"),
    (1, "request", "{answer|reply} {in|within} {a few days|two days|a week}, {please|thanks|no rush}"),
    (1, "request", "{not|never} {time-sensitive|time critical}, {reply|answer} when {convenient|you can}"),
    (1, "request", "{there's|there is} {no|little} {hurry|rush} {here|on this}, {next week|the coming days}"
                   " {is|are} fine"),
    (1, "request", "{nothing|none of this} {is|needs to be} {rushed|urgent}, {take|you can take}"
                   " {a few days|several days}"),
    (1, "request", "{relaxed|calm|unhurried} {pace|timing}, {whenever|any day} {this week|next week} {is fine|works}"),
    (1, "context", "{we|I} {meet|see} {about it|the client} {next week|in a week or so}, {no|not a} {hurry|rush}"),
    (1, "context", "{the|our} {plan|schedule|budget} {is|gets} {finalised|decided} {next month|in a few weeks}"),
    (1, "context", "{it's|it is} {for|about} {a|an} {event|trip|party} {later this month|in a few weeks}"),
    (1, "context", "{I|we} {have|got} {a few days|the whole week|plenty of days} {before|until} {anyone|someone}"
                   " {needs|asks for} {answer}"),
    (1, "context", "{nobody|no one} is {waiting|in a hurry} {for|on} {answer}, {the|our}"
                   " {deadline|due date} is {next week|days away}"),
    (1, "context", "{it|this} {can|will} {sit|stay} in {my|the}"
                   " {inbox|queue} for {a few days|a day or two}, {that's|that is} fine"),

    (2, "request", "{no need to|you needn't|don't} {drop everything|do it this minute|rush}, {but|though}"
                   " {today|by tonight} {please|would be good}"),
    (2, "request", "{not|no} {urgent|rush}, {but|though} {I|we} {do |}{need|want} {answer}"
                   " {before the day ends|by this evening}"),
    (2, "request", "{a little|slightly|a bit} time-sensitive, {later today|by tonight} {is fine|works}"),
    (2, "request", "{answer|reply} {in|within} {a few hours|three hours|four hours|half a day}, {please|thanks}"),
    (2, "request", "{sometime|some time} {before|by} {tonight|this evening|the end of today}"
                   " {please|works|would be good}"),
    (2, "request", "{not this minute|not right this second}, {just|but} {today|within the day}"),
    (2, "request", "{no|not a} {huge|great|big} {rush|hurry}, {just|but} {get it|send it}"
                   " {to me |}{today|this evening}"),
    (2, "request", "{I'd|I would} {like|prefer} {answer}"
                   " {today|this afternoon|tonight}, {no need|there's no need} to hurry"),
    (2, "request", "{today|this afternoon} {at some point|whenever}, {it's|it is} {not|no} {urgent|emergency}"),
    (2, "request", "{later|later on} {today|this evening} {is|would be} {fine|great}, {not|no}"
                   " {right now|this minute}"),
    (2, "context", "{I|we} {need|want} {answer} {for|before} {tonight's|this evening's} {call|meeting|dinner}"),
    (2, "context", "{the|our} {report|slides|notes} {go|goes} out {tomorrow|first thing tomorrow}, {no|not a}"
                   " {panic|rush}"),
    (2, "context", "{I'm|I am} {busy|away|out} {until|till} {this evening|tonight}, {I'll|I will} {read|check}"
                   " {answer} then"),
    (2, "context", "the {deadline|cut-off|due time} is {tonight|this evening|end of day}, {several|a few}"
                   " hours {away|off}"),
    (2, "context", "{it's|it is} {for|about} {tomorrow's|the morning's} {class|shift|meeting}"),
    (2, "context", "{we|I} {have|got} {until|till} {this evening|tonight|five o'clock} {to|before we} {send|file}"
                   " {it|answer}"),

    (3, "request", "{don't|do not} {take|spend} {all day|the whole day|hours} on {it|this}, {within|in}"
                   " {the hour|an hour} {please|is fine}"),
    (3, "request", "{not|no} {an emergency|a panic}, {but|though} {please|do} {answer|reply}"
                   " {within the hour|in the next hour}"),
    (3, "request", "{somewhat|moderately|mildly|reasonably} {urgent|soon|quick}, {but|though} {no|not a}"
                   " {panic|emergency}"),
    (3, "request", "{answer|reply} {in|within} {twenty|thirty|forty|fifty} minutes, {please|thanks|or so}"),
    (3, "request", "{a little|somewhat|a bit} {quicker|faster|sooner} than {usual|normal}"
                   " {would help|please}, {no|not a} panic"),
    (3, "request", "{neither|not} {rushed|hurried} nor {slow|leisurely}, {just|simply} {normal|steady|regular}"),
    (3, "request", "{no need|there's no need} to {rush|panic|race}, {but|though} {I'd|I would} like {answer}"
                   " {soonish|within the hour}"),
    (3, "request", "{don't|do not} {leave|put} {it|this} {until|till}"
                   " {tonight|later today|the evening}, {sometime this hour|within the hour}"),
    (3, "request", "{half an hour|thirty minutes|about an hour} {or so|from now} {is|would be} {good|ideal|fine}"),
    (3, "request", "{please|kindly} {be|stay} {reasonably|fairly|moderately} {prompt|efficient}"),
    (3, "context", "{I|we} {have|got} {an hour|forty minutes|about an hour} {before|until} {the|my|our}"
                   " {meeting|appointment|call}"),
    (3, "context", "the {customer|client|boss} {expects|wants} {answer} {within the hour|by the top of the hour}"),
    (3, "context", "{we|I} {leave|head out|go} in {an hour|about an hour|an hour or so}"),
    (3, "context", "{the|our} {slot|shift|session}"
                   " {ends|closes|finishes} in {an hour|about an hour|forty-five minutes}"),
    (3, "context", "{people|the team|they} {are|is} {waiting|hoping for} {answer}, {but|though} {not|nobody is}"
                   " {impatient|upset}"),
    (3, "context", "{the|a} {train|bus|flight} {leaves|goes} in {about an hour|an hour}, {no|not a} {rush|panic} yet"),

    (4, "request", "{don't|do not} {make|have} {me|us} wait, {be|please be} {quick|brief|fast}"),
    (4, "request", "{I|we} {can't|cannot|won't be able to} {wait|hang on} {long|for long|more than a few minutes}"),
    (4, "request", "{no|not much} time to {spare|waste|dither}, {answer|reply} {in a few minutes|quickly|briskly}"),
    (4, "request", "{don't|do not} {think|dwell|linger} {too long|for long|too much}, {reply|answer}"
                   " {quickly|fast|briskly}"),
    (4, "request", "{somewhat|rather|quite|pretty} {urgent|rushed|pressed}, {be|please be} {quick|snappy}"),
    (4, "request", "{answer|reply} {in|within} {two|three|five|ten} minutes, {please|thanks}"),
    (4, "request", "{I'm|I am|we're|we are} {kind of|a little|rather} {in a hurry|in a rush|pressed for time}"),
    (4, "request", "{not|no} {an emergency|life or death}, {but|though} {please|do} {hurry|be quick|be fast}"),
    (4, "request", "{no|not any} {dilly-dallying|dawdling|lingering}, {please|thanks}, {answer|reply}"
                   " {quickly|briskly}"),
    (4, "request", "{quickly|quick}, {but|though} {no|not a} {panic|emergency}"),
    (4, "request", "{keep|make} {it|this} {short and quick|quick and simple|brisk}, {I'm|I am} {busy|pressed}"),
    (4, "context", "{the|my|our} {meeting|call|lesson} {starts|begins} in {a few|five|ten} minutes, {not|no} more"),
    (4, "context", "{I've|I have|we've} {only |}{got|got just} {a few|five|ten} minutes {before|until}"
                   " {I leave|we go|the bell}"),
    (4, "context", "{someone|a colleague|the client} is {waiting|tapping their foot} {for|on}"
                   " {answer}, {a bit|rather} {impatient|restless}"),
    (4, "context", "the {shop|cafe|counter} {closes|shuts} in {a few|ten|fifteen} minutes"),
    (4, "context", "{I'm|I am} {late|running late} {for|to} {a meeting|class|work}"),

    (5, "request", "{I|we} {can't|cannot} {wait|hang on|hold on}"
                   " {much longer|a minute more|another minute}, {answer|reply} {now|right now}"),
    (5, "request", "{don't|do not} {think|check|dwell}, {just|only} {answer|reply}"
                   " {right now|this minute|immediately}"),
    (5, "request", "{no|there's no} time {for|to spend on} {checking|double-checking|care}, {answer|reply}"
                   " {now|immediately}"),
    (5, "request", "{very|really|extremely|super} {urgent|pressing}, {answer|reply|respond} {now|at once|immediately}"),
    (5, "request", "{not|no} {a second|a minute} {later|to lose}, {I need|we need} {answer} {right now|immediately}"),
    (5, "request", "{answer|reply} {in|within} {one|a single} minute, {no|not} {later|more}"),
    (5, "request", "{hurry|quick|fast}, {hurry|quick|fast}, {now|right now}"),
    (5, "request", "{I'm|I am|we're|we are} {in|at} {a huge|a real|an awful} {rush|hurry}, {answer|reply}"
                   " {now|at once}"),
    (5, "request", "{this|it} {can't|cannot} wait, {answer|reply} {right now|immediately|at once}"),
    (5, "request", "{don't|do not} {make me|make us|let me} wait {at all|a second|even a minute}"),
    (5, "request", "{not|no} {a life-or-death matter|an emergency}, {but|though} {I need|we need} {answer}"
                   " {right now|this minute}"),
    (5, "context", "{the|our} {boss|client|customer} is {yelling|shouting|waiting right here} {for|about} {answer}"),
    (5, "context", "{the|my} {call|interview|presentation} {starts|begins} {any moment now|in a minute|right now}"),
    (5, "context", "{the|our} {servers|orders|systems} are {going down|failing|backing up} {as we speak|right now}"),
    (5, "context", "{I'm|I am} {already|now} late, {the|my} {train|bus|flight} {leaves|goes} {in a minute|right now}"),
    (5, "context", "{the|a} {crowd|line|queue} of {angry|impatient} {customers|people} is {waiting|right here}"),

    (6, "request", "{nothing|not a thing} {matters|counts} {but|except} {speed|being fast|how fast}, {answer|reply}"
                   " {instantly|now}"),
    (6, "request", "{forget|skip|never mind} {accuracy|care|checking}, {we|I} {have|got} {seconds|one second|no time}"),
    (6, "request", "{don't|do not} {think|wait|pause} {at all|for even a second}, {lives|a life}"
                   " {depend|depends} on it"),
    (6, "request", "{extremely|critically|desperately} urgent, {a|one} {second|split second} {too late|of delay}"
                   " {and|is} {it's over|fatal}"),
    (6, "request", "{answer|reply} {in|within} {one|two|three} seconds, {not|no} {more|later}"),
    (6, "request", "{not|no} {a moment|an instant|a heartbeat} to {think|wait|spare}, {emergency|it's an emergency}"),
    (6, "request", "{we|I} {can't|cannot} {wait|afford} {even|a single} {one second|a second}, {answer|reply}"
                   " {instantly|now}"),
    (6, "request", "{the|a} {fastest|quickest|most instant} {reply|answer|response}"
                   " {imaginable|ever|there is}, {people|lives} {at risk|in danger}"),
    (6, "request", "{instantly|immediately}, {this|it} is {life or death|a matter of life and death|an emergency}"),
    (6, "request", "{hurry|quick|now}, {hurry|quick|now}, {people are|someone is} {dying|in danger}"),
    (6, "context", "{the|a} {fire|flood|blast} {is|has} {spreading|reached|in} the {room|hallway|building}"
                   " {right now|this second}"),
    (6, "context", "{we|I} {have|got} {seconds|a few seconds|two seconds} {before|until} {impact|the crash|it blows}"),
    (6, "context", "{the|a} {patient|child|man} {will die|won't survive|is dying}"
                   " {in seconds|any second|without it now}"),
    (6, "context", "{the|our} {plane|ship|train} {is|has} {losing altitude|going down|no brakes} {and|with}"
                   " {seconds|moments} left"),
    (6, "context", "{the|an} {explosion|meltdown|collapse} is {seconds|moments|a heartbeat} away"),
    (6, "context", "{the|our} {hull|dam|levee} {is|has} {breaking|breached|giving way} {right now|this instant}"),
]
