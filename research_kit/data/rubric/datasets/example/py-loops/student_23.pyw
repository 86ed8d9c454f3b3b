def start():
    print("Times table maker")

start()
number = int(input("Number: "))
total = 0
for i in range(1, 11):
    print(number, "x", i, "=", number * i)
    total += number * i
print("Total:", total)
